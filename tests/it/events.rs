//! Events from real traffic: the real registry, skopeo and helm through wharf, and exactly the
//! events they must make, read back from wharf's event log (`GET /api/v1/events` as admin).
//!
//! Pull events are recorded in the background once the client has the whole body, so every
//! check polls until the expected number of events is there, then waits [`SETTLE`] more and
//! checks that no extra event appeared.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::http::{RawConn, sha256_digest};
use crate::common::oci::{self, OciImage};
use crate::common::wharf::ADMIN_PASSWORD;
use crate::common::{ChartKind, Helm, Registry, RegistryClient, Skopeo, Wharf, client, wait_until};
use wharf::events::format::{PayloadFormat, RenderCtx, render};

/// How long the expected events may take to appear.
const WAIT: Duration = Duration::from_secs(10);
/// How long to keep looking for unexpected extra events once the expected ones are there.
const SETTLE: Duration = Duration::from_millis(300);

fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wharf-it-events-")
        .tempdir()
        .unwrap()
}

/// The event log, oldest first. `query`: e.g. `repository=prj/app&type=PULL_ARTIFACT`.
async fn events(wharf: &Wharf, query: &str) -> Vec<Value> {
    let url = format!("{}/api/v1/events?limit=10000&{query}", wharf.url());
    let resp = client()
        .get(&url)
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "GET {url}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut list = v.as_array().expect("an array of events").clone();
    list.reverse();
    list
}

fn show(list: &[Value]) -> String {
    serde_json::to_string_pretty(list).unwrap()
}

/// Wait until the log has `n` events matching `query`, then [`SETTLE`] and check that it still
/// has exactly `n`. Returns them, oldest first.
async fn expect_events(wharf: &Wharf, query: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = events(wharf, query).await;
        if list.len() >= n {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "expected {n} events for {query:?} within {WAIT:?}, have {}:\n{}\nall events:\n{}",
                list.len(),
                show(&list),
                show(&events(wharf, "all=true").await)
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let list = events(wharf, query).await;
    assert_eq!(
        list.len(),
        n,
        "expected exactly {n} events for {query:?}, have:\n{}",
        show(&list)
    );
    list
}

/// The newest of exactly `n` events matching `query`.
async fn expect_last(wharf: &Wharf, query: &str, n: usize) -> Value {
    expect_events(wharf, query, n).await.pop().unwrap()
}

fn as_event(v: &Value) -> wharf::events::Event {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not an Event ({e}): {v}"))
}

/// The Default (Harbor 2.x) payload of a stored event.
fn default_payload(v: &Value) -> Value {
    let p = render(
        &as_event(v),
        PayloadFormat::Default,
        None,
        &RenderCtx::default(),
    )
    .unwrap();
    serde_json::from_slice(&p.body).unwrap()
}

/// The client's `User-Agent` starts with `prefix` (skopeo: `skopeo/…`, helm: `Helm/…`).
fn assert_user_agent(e: &Value, prefix: &str) {
    assert!(
        e["user_agent"]
            .as_str()
            .is_some_and(|s| s.starts_with(prefix)),
        "user_agent should start with {prefix:?}: {e}"
    );
}

fn tags(e: &Value) -> Vec<String> {
    serde_json::from_value(e["tags"].clone()).unwrap()
}

/// Config + layer sizes of one platform image.
fn image_size(p: &oci::PlatformImage) -> u64 {
    p.config.size + p.layers.iter().map(|l| l.size).sum::<u64>()
}

/// Size of an image or, for an index, the sum over its platform images.
fn total_size(image: &OciImage) -> u64 {
    image.platforms.iter().map(image_size).sum()
}

async fn get_manifest(wharf: &Wharf, repo: &str, reference: &str, accept: &str) -> Vec<u8> {
    let resp = client()
        .get(format!("{}/v2/{repo}/manifests/{reference}", wharf.url()))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET manifest {repo}:{reference}");
    resp.bytes().await.unwrap().to_vec()
}

async fn head_manifest(wharf: &Wharf, repo: &str, reference: &str, accept: &str) -> String {
    let resp = client()
        .head(format!("{}/v2/{repo}/manifests/{reference}", wharf.url()))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "HEAD manifest {repo}:{reference}");
    resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

async fn delete_manifest(base: &str, repo: &str, digest: &str, auth: Option<(&str, &str)>) {
    let mut rb = client().delete(format!("{base}/v2/{repo}/manifests/{digest}"));
    if let Some((u, p)) = auth {
        rb = rb.basic_auth(u, Some(p));
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    assert_eq!(
        status,
        202,
        "DELETE {repo}@{digest}: {}",
        resp.text().await.unwrap()
    );
}

/// The fields every event from a request carries (`user_agent`: only when the client sent one).
fn assert_request_fields(e: &Value) {
    assert!(
        e["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "request_id: {e}"
    );
    assert_eq!(e["client_addr"], "127.0.0.1", "{e}");
    assert!(
        e["id"]
            .as_str()
            .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()),
        "{e}"
    );
}

// 1 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_is_exactly_one_push_artifact() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[64 * 1024, 1024]);
    Skopeo::new()
        .copy_ok(
            &image.oci_ref(),
            &format!("docker://{}/prj/app:v1", wharf.host()),
            &[],
        )
        .await;

    // Nothing else at all: no pull, no held event.
    let all = expect_events(&wharf, "all=true", 1).await;
    let e = &all[0];
    assert_eq!(e["type"], "PUSH_ARTIFACT", "{e}");
    assert_eq!(e["state"], "published", "{e}");
    assert_eq!(e["project"], "prj");
    assert_eq!(e["repository"], "prj/app");
    assert_eq!(tags(e), ["v1"]);
    assert_eq!(e["digest"], image.digest.as_str());
    assert_eq!(e["size"], image_size(image.manifest()), "{e}");
    assert_eq!(e["media_type"], oci::MANIFEST_V1);
    assert_eq!(
        e["resource_url"],
        format!("{}/prj/app:v1", wharf.host()),
        "{e}"
    );
    assert_eq!(e["operator"], "anonymous");
    assert_eq!(e["public"], false);
    assert!(e.get("platforms").is_none(), "{e}");
    assert_request_fields(e);
    assert_user_agent(e, "skopeo/");

    // The Default payload.
    let p = default_payload(e);
    assert_eq!(p["type"], "PUSH_ARTIFACT");
    assert_eq!(p["operator"], "anonymous");
    let r = &p["event_data"]["resources"][0];
    assert_eq!(r["tag"], "v1");
    assert_eq!(r["digest"], image.digest.as_str());
    assert_eq!(r["resource_url"], format!("{}/prj/app:v1", wharf.host()));
    assert_eq!(p["event_data"]["repository"]["name"], "app");
    assert_eq!(p["event_data"]["repository"]["namespace"], "prj");
    assert_eq!(p["event_data"]["repository"]["repo_type"], "private");
}

// 2 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_push_of_the_same_tag_is_a_second_push() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[8 * 1024]);
    let skopeo = Skopeo::new();
    let remote = format!("docker://{}/prj/again:v1", wharf.host());
    skopeo.copy_ok(&image.oci_ref(), &remote, &[]).await;
    let first = expect_last(&wharf, "repository=prj/again", 1).await;
    skopeo.copy_ok(&image.oci_ref(), &remote, &[]).await;
    let list = expect_events(&wharf, "repository=prj/again", 2).await;
    assert_eq!(list[0], first);
    let second = &list[1];
    assert_eq!(second["type"], "PUSH_ARTIFACT");
    assert_ne!(second["id"], first["id"]);
    assert_ne!(second["request_id"], first["request_id"]);
    for k in ["digest", "tags", "size", "media_type", "resource_url"] {
        assert_eq!(second[k], first[k], "{k}");
    }
}

// 3 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_by_tag_by_digest_and_head() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[16 * 1024]);
    let size = image_size(image.manifest());
    RegistryClient::new(&wharf.url())
        .push_image("prj/pull", "v1", &image)
        .await;
    expect_events(&wharf, "type=PUSH_ARTIFACT", 1).await;
    const PULLS: &str = "type=PULL_ARTIFACT";

    // By digest, nothing resolved before by this client: no tag; Default: tag = the digest.
    get_manifest(&wharf, "prj/pull", &image.digest, oci::MANIFEST_V1).await;
    let e = expect_last(&wharf, PULLS, 1).await;
    assert_eq!(e["repository"], "prj/pull");
    assert_eq!(e["digest"], image.digest.as_str());
    assert!(tags(&e).is_empty(), "{e}");
    assert_eq!(e["size"], size);
    assert_eq!(e["media_type"], oci::MANIFEST_V1);
    assert_eq!(
        e["resource_url"],
        format!("{}/prj/pull@{}", wharf.host(), image.digest)
    );
    assert_eq!(e["operator"], "anonymous");
    assert_request_fields(&e);
    let p = default_payload(&e);
    assert_eq!(p["type"], "PULL_ARTIFACT");
    assert_eq!(
        p["event_data"]["resources"][0]["tag"],
        image.digest.as_str()
    );

    // The pull takes the id wharf made for its request (returned as X-Request-Id) as its own.
    assert_eq!(e["id"], e["request_id"], "{e}");

    // HEAD is no pull.
    let d = head_manifest(&wharf, "prj/pull", "v1", oci::MANIFEST_V1).await;
    assert_eq!(d, image.digest);
    expect_events(&wharf, PULLS, 1).await;

    // helm-style: HEAD by tag (just done), then GET by digest: one pull, with the tag.
    get_manifest(&wharf, "prj/pull", &image.digest, oci::MANIFEST_V1).await;
    let e = expect_last(&wharf, PULLS, 2).await;
    assert_eq!(tags(&e), ["v1"], "{e}");
    assert_eq!(e["digest"], image.digest.as_str());
    assert_eq!(e["resource_url"], format!("{}/prj/pull:v1", wharf.host()));

    // A request id the client sent stays the request's only; the event has its own id.
    let pull_v1 = |sent: Option<&'static str>| {
        let mut rb = client()
            .get(format!("{}/v2/prj/pull/manifests/v1", wharf.url()))
            .header("accept", oci::MANIFEST_V1);
        if let Some(id) = sent {
            rb = rb.header("x-request-id", id);
        }
        async move {
            let resp = rb.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
            resp.bytes().await.unwrap();
            id
        }
    };
    for sent in ["it-pull-1", "01a2379e-c2b1-76b2-b3ab-8958c36f2211"] {
        assert_eq!(pull_v1(Some(sent)).await, sent);
        let n = if sent == "it-pull-1" { 3 } else { 4 };
        let e = expect_last(&wharf, PULLS, n).await;
        assert_eq!(e["request_id"], sent, "{e}");
        assert_ne!(e["id"], sent, "{e}");
    }
    // and one wharf made: the same id in the response and in the event
    let made = pull_v1(None).await;
    let e = expect_last(&wharf, PULLS, 5).await;
    assert_eq!((&e["id"], &e["request_id"]), (&json!(made), &json!(made)));

    // skopeo by tag: one pull.
    let out = work.path().join("out");
    Skopeo::new()
        .copy_ok(
            &format!("docker://{}/prj/pull:v1", wharf.host()),
            &format!("oci:{}:v1", out.display()),
            &[],
        )
        .await;
    let e = expect_last(&wharf, PULLS, 6).await;
    assert_eq!(tags(&e), ["v1"], "{e}");
    assert_eq!(e["digest"], image.digest.as_str());
    assert_eq!(e["size"], size);
    assert_user_agent(&e, "skopeo/");
    // and still only the one push
    expect_events(&wharf, "type=PUSH_ARTIFACT", 1).await;
}

// 4 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_push_and_pull_are_one_event_each() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let index = oci::build_index(&work.path().join("src"), "multi", &[32 * 1024, 1024]);
    let skopeo = Skopeo::new();
    let remote = format!("docker://{}/prj/multi:1.0", wharf.host());
    skopeo.copy_ok(&index.oci_ref(), &remote, &["--all"]).await;

    let e = expect_last(&wharf, "repository=prj/multi", 1).await;
    assert_eq!(e["type"], "PUSH_ARTIFACT");
    assert_eq!(tags(&e), ["1.0"]);
    assert_eq!(e["digest"], index.digest.as_str());
    assert_eq!(e["media_type"], oci::INDEX_V1);
    assert_eq!(e["platforms"], json!(["linux/amd64", "linux/arm64"]));
    assert_eq!(e["size"], total_size(&index), "{e}");
    assert_eq!(e["resource_url"], format!("{}/prj/multi:1.0", wharf.host()));
    // The platform manifests' own events were absorbed (cancelled), none is left waiting.
    let all = events(&wharf, "all=true").await;
    let mut cancelled: Vec<&str> = all
        .iter()
        .filter(|e| e["state"] == "cancelled")
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    cancelled.sort();
    let mut children: Vec<&str> = index
        .platforms
        .iter()
        .map(|p| p.manifest.digest.as_str())
        .collect();
    children.sort();
    assert_eq!(cancelled, children, "{}", show(&all));
    assert!(all.iter().all(|e| e["state"] != "held"), "{}", show(&all));
    let p = default_payload(&e);
    assert_eq!(
        p["event_data"]["resources"][0]["platforms"],
        json!(["linux/amd64", "linux/arm64"])
    );

    // skopeo without --all: the index by tag, then one platform manifest by digest: one pull.
    const PULLS: &str = "type=PULL_ARTIFACT";
    let out = work.path().join("out");
    skopeo
        .copy_ok(&remote, &format!("oci:{}:1.0", out.display()), &[])
        .await;
    let e = expect_last(&wharf, PULLS, 1).await;
    assert_eq!(e["digest"], index.digest.as_str(), "{e}");
    assert_eq!(tags(&e), ["1.0"]);
    assert_eq!(e["media_type"], oci::INDEX_V1);
    assert_eq!(e["platforms"], json!(["linux/amd64", "linux/arm64"]));
    assert_eq!(e["size"], total_size(&index), "{e}");

    // The same by hand from one client, back to back, several times: the index by tag, then
    // both children by digest: one pull each time.
    const ROUNDS: usize = 10;
    for _ in 0..ROUNDS {
        get_manifest(&wharf, "prj/multi", "1.0", oci::INDEX_V1).await;
        for p in &index.platforms {
            get_manifest(&wharf, "prj/multi", &p.manifest.digest, oci::MANIFEST_V1).await;
        }
    }
    let list = expect_events(&wharf, PULLS, 1 + ROUNDS).await;
    assert!(
        list.iter().all(|e| e["digest"] == index.digest.as_str()),
        "{}",
        show(&list)
    );
    assert!(list.iter().all(|e| tags(e) == ["1.0"]), "{}", show(&list));

    // A platform manifest pulled alone (by a client that did not just pull the index) is a
    // pull of its own.
    let d = &index.platforms[1].manifest.digest;
    let resp = client()
        .get(format!("{}/v2/prj/multi/manifests/{d}", wharf.url()))
        .header("accept", oci::MANIFEST_V1)
        .basic_auth("someone-else", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let e = expect_last(&wharf, PULLS, ROUNDS + 2).await;
    assert_eq!(e["digest"], d.as_str());
    assert_eq!(e["operator"], "someone-else");
    assert_eq!(e["size"], image_size(&index.platforms[1]));
    expect_events(&wharf, "type=PUSH_ARTIFACT", 1).await;

    // Deleting the index: one event, like its push.
    delete_manifest(&wharf.url(), "prj/multi", &index.digest, None).await;
    let e = expect_last(&wharf, "type=DELETE_ARTIFACT", 1).await;
    assert_eq!(e["digest"], index.digest.as_str());
    assert_eq!(tags(&e), ["1.0"]);
    assert_eq!(e["media_type"], oci::INDEX_V1);
    assert_eq!(e["size"], total_size(&index), "{e}");
    assert_eq!(e["platforms"], json!(["linux/amd64", "linux/arm64"]), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_manifest_pushed_alone_is_published_after_the_index_window() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml("events: {index_window: 1s}\n")
        .start()
        .await;
    let work = work_dir();
    let index = oci::build_index(&work.path().join("src"), "x", &[4096]);
    let p = &index.platforms[0];
    let rc = RegistryClient::new(&wharf.url());
    for b in [&p.config, &p.layers[0]] {
        let data = std::fs::read(index.blob_path(&b.digest)).unwrap();
        rc.upload_blob("prj/alone", data).await;
    }
    let data = std::fs::read(index.blob_path(&p.manifest.digest)).unwrap();
    let started = std::time::Instant::now();
    let d = rc
        .put_manifest("prj/alone", &p.manifest.digest, oci::MANIFEST_V1, data)
        .await;
    assert_eq!(d, p.manifest.digest);

    // Held (committed before the 201), not yet published.
    let all = events(&wharf, "all=true").await;
    assert_eq!(all.len(), 1, "{}", show(&all));
    assert_eq!(all[0]["state"], "held");
    assert!(events(&wharf, "").await.is_empty());

    let e = expect_last(&wharf, "", 1).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "published after {:?}, before the window",
        started.elapsed()
    );
    assert_eq!(e["type"], "PUSH_ARTIFACT");
    assert_eq!(e["state"], "published");
    assert_eq!(e["digest"], p.manifest.digest.as_str());
    assert!(tags(&e).is_empty());
    assert_eq!(e["size"], image_size(p));
    assert_eq!(
        e["resource_url"],
        format!("{}/prj/alone@{}", wharf.host(), p.manifest.digest)
    );
    assert_eq!(events(&wharf, "all=true").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_manifest_deleted_while_held_is_pushed_before_it_is_deleted() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml("events: {index_window: 2s}\n")
        .start()
        .await;
    let work = work_dir();
    let index = oci::build_index(&work.path().join("src"), "x", &[512]);
    let p = &index.platforms[0];
    let rc = RegistryClient::new(&wharf.url());
    for b in [&p.config, &p.layers[0]] {
        let data = std::fs::read(index.blob_path(&b.digest)).unwrap();
        rc.upload_blob("prj/held", data).await;
    }
    let data = std::fs::read(index.blob_path(&p.manifest.digest)).unwrap();
    rc.put_manifest("prj/held", &p.manifest.digest, oci::MANIFEST_V1, data)
        .await;
    delete_manifest(&wharf.url(), "prj/held", &p.manifest.digest, None).await;
    // The push is not left waiting to be published after its own delete.
    let list = expect_events(&wharf, "all=true", 2).await;
    assert_eq!(list[0]["type"], "PUSH_ARTIFACT", "{}", show(&list));
    assert_eq!(list[0]["state"], "published", "{}", show(&list));
    assert_eq!(list[1]["type"], "DELETE_ARTIFACT", "{}", show(&list));
    assert_eq!(list[1]["size"], image_size(p));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = events(&wharf, "all=true").await;
    assert_eq!(after, list, "{}", show(&after));
}

// 5 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_push_pull_and_delete_are_chart_events() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let helm = Helm::new();
    let app = helm
        .package("mychart", "0.1.0", ChartKind::Application)
        .await;
    let lib = helm.package("mylib", "1.2.3", ChartKind::Library).await;
    helm.push(&app, &wharf.host(), "prj").await.assert_success();
    helm.push(&lib, &wharf.host(), "prj").await.assert_success();

    let uploads = expect_events(&wharf, "type=UPLOAD_CHART", 2).await;
    assert!(
        events(&wharf, "type=PUSH_ARTIFACT&all=true")
            .await
            .is_empty(),
        "a chart push is no PUSH_ARTIFACT"
    );
    assert_eq!(events(&wharf, "all=true").await.len(), 2);
    for (e, name, version, kind, tgz) in [
        (&uploads[0], "mychart", "0.1.0", "application", &app),
        (&uploads[1], "mylib", "1.2.3", "library", &lib),
    ] {
        let size = std::fs::metadata(tgz).unwrap().len();
        assert_eq!(e["repository"], format!("prj/{name}"));
        assert_eq!(e["project"], "prj");
        assert_eq!(tags(e), [version]);
        assert_eq!(
            e["chart"],
            json!({"name": name, "version": version, "type": kind, "app_version": "1.0", "size": size}),
            "{e}"
        );
        assert_eq!(e["size"], size);
        assert_eq!(e["media_type"], oci::MANIFEST_V1);
        assert_eq!(
            e["resource_url"],
            format!("{}/prj/{name}:{version}", wharf.host())
        );
        assert_request_fields(e);
        assert_user_agent(e, "Helm/");
        let p = default_payload(e);
        let r = &p["event_data"]["resources"][0];
        assert_eq!(r["chart_name"], name);
        assert_eq!(r["chart_version"], version);
        assert_eq!(r["chart_type"], kind);
        assert_eq!(r["size"], size);
    }

    helm.pull(&wharf.host(), "prj", "mychart", "0.1.0").await;
    let e = expect_last(&wharf, "type=DOWNLOAD_CHART", 1).await;
    assert_eq!(e["repository"], "prj/mychart");
    assert_eq!(e["chart"]["version"], "0.1.0", "{e}");
    assert_eq!(e["chart"]["name"], "mychart");
    assert_eq!(e["chart"]["type"], "application");
    assert_eq!(tags(&e), ["0.1.0"], "{e}");
    assert_eq!(e["digest"], uploads[0]["digest"]);
    assert!(events(&wharf, "type=PULL_ARTIFACT").await.is_empty());

    let digest = uploads[0]["digest"].as_str().unwrap();
    delete_manifest(&wharf.url(), "prj/mychart", digest, None).await;
    let e = expect_last(&wharf, "type=DELETE_CHART", 1).await;
    let size = std::fs::metadata(&app).unwrap().len();
    assert_eq!(e["digest"], digest);
    assert_eq!(e["chart"]["name"], "mychart");
    assert_eq!(e["chart"]["version"], "0.1.0");
    assert_eq!(e["chart"]["type"], "application");
    assert_eq!(e["chart"]["size"], size);
    assert_eq!(e["size"], size);
    assert_eq!(tags(&e), ["0.1.0"]);
    assert!(events(&wharf, "type=DELETE_ARTIFACT").await.is_empty());
    assert_eq!(events(&wharf, "all=true").await.len(), 4);
}

// 6 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_digest_reports_size_and_every_tag() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "a", &[8 * 1024, 512]);
    let skopeo = Skopeo::new();
    for tag in ["a", "b"] {
        skopeo
            .copy_ok(
                &image.oci_ref(),
                &format!("docker://{}/prj/del:{tag}", wharf.host()),
                &[],
            )
            .await;
    }
    expect_events(&wharf, "type=PUSH_ARTIFACT", 2).await;
    delete_manifest(&wharf.url(), "prj/del", &image.digest, None).await;
    let e = expect_last(&wharf, "type=DELETE_ARTIFACT", 1).await;
    assert_eq!(e["repository"], "prj/del");
    assert_eq!(e["digest"], image.digest.as_str());
    assert_eq!(tags(&e), ["a", "b"], "{e}");
    assert_eq!(e["size"], image_size(image.manifest()), "{e}");
    assert_eq!(e["media_type"], oci::MANIFEST_V1);
    assert_eq!(
        e["resource_url"],
        format!("{}/prj/del@{}", wharf.host(), image.digest)
    );
    assert_request_fields(&e);
    // Default: one resource, as Harbor (its tag is the first), every tag in `tags`
    let p = default_payload(&e);
    let res = p["event_data"]["resources"].as_array().unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(res[0]["tag"], "a");
    assert_eq!(res[0]["tags"], serde_json::json!(["a", "b"]));

    // A tag wharf saw, moved to another image behind wharf's back: the deleted image no longer
    // has it (distribution deletes the tags of a deleted manifest, so reporting it is wrong).
    let moved = oci::build_image(&work.path().join("moved"), "m", &[300]);
    let newer = oci::build_image(&work.path().join("newer"), "m", &[301]);
    let through = RegistryClient::new(&wharf.url());
    through.push_image("prj/moved", "m", &moved).await;
    through.push_image("prj/moved", "keep", &moved).await;
    RegistryClient::new(&registry.url())
        .push_image("prj/moved", "m", &newer)
        .await;
    delete_manifest(&wharf.url(), "prj/moved", &moved.digest, None).await;
    let e = expect_last(&wharf, "type=DELETE_ARTIFACT&repository=prj/moved", 1).await;
    assert_eq!(tags(&e), ["keep"], "{e}");

    // Pushed straight to the registry, wharf never saw it: it asks the registry.
    let other = oci::build_image(&work.path().join("direct"), "x", &[4096]);
    let direct = RegistryClient::new(&registry.url());
    direct.push_image("prj/direct", "x", &other).await;
    direct.push_image("prj/direct", "y", &other).await;
    let unrelated = oci::build_image(&work.path().join("unrelated"), "z", &[100]);
    direct.push_image("prj/direct", "z", &unrelated).await;
    delete_manifest(&wharf.url(), "prj/direct", &other.digest, None).await;
    let e = expect_last(&wharf, "type=DELETE_ARTIFACT&repository=prj/direct", 1).await;
    assert_eq!(e["digest"], other.digest.as_str());
    assert_eq!(tags(&e), ["x", "y"], "{e}");
    assert_eq!(e["size"], image_size(other.manifest()), "{e}");
    assert_eq!(e["media_type"], oci::MANIFEST_V1);
    // Only the deletes and the pushes through wharf.
    assert_eq!(events(&wharf, "all=true").await.len(), 7);
}

/// Real skopeo by digest: `skopeo copy docker://…@sha256:…` is one pull with the digest and no
/// tag; `skopeo delete docker://…@sha256:…` is one delete with the size and every tag (and,
/// because skopeo reads the manifest first, one more pull).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pull_and_delete_by_digest() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "a", &[4096, 300]);
    let skopeo = Skopeo::new();
    for tag in ["a", "b"] {
        skopeo
            .copy_ok(
                &image.oci_ref(),
                &format!("docker://{}/prj/sk:{tag}", wharf.host()),
                &[],
            )
            .await;
    }
    expect_events(&wharf, "type=PUSH_ARTIFACT", 2).await;
    let by_digest = format!("docker://{}/prj/sk@{}", wharf.host(), image.digest);

    let out = work.path().join("out");
    skopeo
        .copy_ok(&by_digest, &format!("oci:{}:x", out.display()), &[])
        .await;
    let e = expect_last(&wharf, "type=PULL_ARTIFACT", 1).await;
    assert_eq!(e["digest"], image.digest.as_str());
    assert!(tags(&e).is_empty(), "{e}");
    assert_eq!(e["size"], image_size(image.manifest()));
    assert_user_agent(&e, "skopeo/");

    skopeo
        .run_ok(&["delete", "--tls-verify=false", &by_digest])
        .await;
    let e = expect_last(&wharf, "type=DELETE_ARTIFACT", 1).await;
    assert_eq!(e["digest"], image.digest.as_str());
    assert_eq!(tags(&e), ["a", "b"], "{e}");
    assert_eq!(e["size"], image_size(image.manifest()));
    assert_user_agent(&e, "skopeo/");
    let status = client()
        .get(format!("{}/v2/prj/sk/manifests/a", registry.url()))
        .header("accept", oci::MANIFEST_V1)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "gone from the registry");
    // skopeo delete GETs the manifest before it deletes it: that GET is a pull like any other
    let pulls = expect_events(&wharf, "type=PULL_ARTIFACT", 2).await;
    assert_eq!(pulls[1]["digest"], image.digest.as_str());
    assert_eq!(events(&wharf, "all=true").await.len(), 5);
}

// 7 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_is_the_basic_user_of_an_auth_registry() {
    let registry = Registry::start_with_auth("alice", "s3cret-pw").await;
    let wharf = Wharf::start(&registry.url()).await;
    let creds = registry.creds_arg().unwrap();
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[4096]);
    let skopeo = Skopeo::new();
    let remote = format!("docker://{}/prj/secure:v1", wharf.host());
    // Without credentials: refused, no event.
    skopeo
        .copy(&image.oci_ref(), &remote, &[])
        .await
        .assert_failure();
    skopeo
        .copy_ok(&image.oci_ref(), &remote, &["--dest-creds", &creds])
        .await;
    let e = expect_last(&wharf, "all=true", 1).await;
    assert_eq!(e["type"], "PUSH_ARTIFACT");
    assert_eq!(e["operator"], "alice");
    assert_eq!(default_payload(&e)["operator"], "alice");

    let out = work.path().join("out");
    skopeo
        .copy_ok(
            &remote,
            &format!("oci:{}:v1", out.display()),
            &["--src-creds", &creds],
        )
        .await;
    let e = expect_last(&wharf, "type=PULL_ARTIFACT", 1).await;
    assert_eq!(e["operator"], "alice");

    // The delete looks the artifact up with alice's credentials.
    delete_manifest(
        &wharf.url(),
        "prj/secure",
        &image.digest,
        Some(("alice", "s3cret-pw")),
    )
    .await;
    let e = expect_last(&wharf, "type=DELETE_ARTIFACT", 1).await;
    assert_eq!(e["operator"], "alice");
    assert_eq!(tags(&e), ["v1"]);
    assert_eq!(e["size"], image_size(image.manifest()));
}

// 8 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_segment_names_keep_project_and_short_name() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "1.0", &[4096]);
    Skopeo::new()
        .copy_ok(
            &image.oci_ref(),
            &format!("docker://{}/prj/team/app:1.0", wharf.host()),
            &[],
        )
        .await;
    let e = expect_last(&wharf, "project=prj&repository=prj/team/app", 1).await;
    assert_eq!(e["project"], "prj");
    assert_eq!(e["repository"], "prj/team/app");
    assert_eq!(
        e["resource_url"],
        format!("{}/prj/team/app:1.0", wharf.host())
    );
    let p = default_payload(&e);
    let repo = &p["event_data"]["repository"];
    assert_eq!(repo["name"], "team/app");
    assert_eq!(repo["namespace"], "prj");
    assert_eq!(repo["repo_full_name"], "prj/team/app");
    assert_eq!(
        p["event_data"]["resources"][0]["image_name"],
        "prj/team/app:1.0"
    );
    let legacy: Value = serde_json::from_slice(
        &render(
            &as_event(&e),
            PayloadFormat::Legacy,
            None,
            &RenderCtx::default(),
        )
        .unwrap()
        .body,
    )
    .unwrap();
    assert_eq!(legacy["events"][0]["project"], "prj");
    assert_eq!(legacy["events"][0]["repo_name"], "team/app");
    assert_eq!(legacy["events"][0]["full_name"], "prj/team/app");
}

// 9 ------------------------------------------------------------------------------------------

/// PUT a manifest with a body, returning (status, body text).
async fn put_raw(
    base: &str,
    repo: &str,
    reference: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let resp = client()
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn error_code(body: &str) -> Value {
    serde_json::from_str::<Value>(body)
        .map(|v| v["errors"][0]["code"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_answer_like_the_registry_and_make_no_event() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[2048]);
    let m = image.manifest();
    // The blobs a big manifest refers to exist, so only its size is special.
    let direct = RegistryClient::new(&registry.url());
    for b in [&m.config, &m.layers[0]] {
        direct
            .upload_blob(
                "prj/bad",
                std::fs::read(image.blob_path(&b.digest)).unwrap(),
            )
            .await;
    }
    let big = json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST_V1,
        "config": m.config.descriptor(),
        "layers": [m.layers[0].descriptor()],
        "annotations": {"padding": "x".repeat(5 << 20)},
    });
    let big = serde_json::to_vec(&big).unwrap();
    assert!(big.len() > 5 << 20);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "malformed",
            oci::MANIFEST_V1,
            b"{\"schemaVersion\": 2, \"config\": ".to_vec(),
        ),
        ("big", oci::MANIFEST_V1, big.clone()),
        (
            "unknown",
            "application/x-unknown",
            b"this is not a manifest at all".to_vec(),
        ),
        (
            "unknown-json",
            "application/x-unknown",
            b"{\"hello\":1}".to_vec(),
        ),
    ];
    for (tag, ct, body) in cases {
        let (want, want_body) = put_raw(
            &registry.url(),
            "prj/bad",
            &format!("{tag}-direct"),
            ct,
            body.clone(),
        )
        .await;
        let (got, got_body) = put_raw(&wharf.url(), "prj/bad", tag, ct, body).await;
        assert_eq!(
            got, want,
            "{tag}: wharf answered {got} {got_body}, the registry {want} {want_body}"
        );
        assert_eq!(
            error_code(&got_body),
            error_code(&want_body),
            "{tag}: {got_body}"
        );
        let health = client()
            .get(format!("{}/healthz", wharf.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "{tag}");
    }

    // The big one once more, chunked (no Content-Length): over the cap while being read.
    let mut conn = RawConn::connect(wharf.addr()).await;
    let head = format!(
        "PUT /v2/prj/bad/manifests/chunked HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        wharf.host(),
        oci::MANIFEST_V1
    );
    conn.send(head.as_bytes()).await.unwrap();
    for chunk in big.chunks(256 * 1024) {
        conn.send(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        conn.send(chunk).await.unwrap();
        conn.send(b"\r\n").await.unwrap();
    }
    conn.send(b"0\r\n\r\n").await.unwrap();
    let resp = conn.read_response(false).await.unwrap();
    let (want, _) = put_raw(
        &registry.url(),
        "prj/bad",
        "big-direct2",
        oci::MANIFEST_V1,
        big,
    )
    .await;
    assert_eq!(resp.status, want, "chunked big manifest: {}", resp.text());

    let health = client()
        .get(format!("{}/healthz", wharf.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    tokio::time::sleep(SETTLE).await;
    let all = events(&wharf, "all=true").await;
    assert!(all.is_empty(), "{}", show(&all));
}

// 10 -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_pulls_and_public_projects() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml("projects: {prj: {public: true, ignore_pulls: {user_agents: [\"Trivy/*\"]}}}\n")
        .start()
        .await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[1024]);
    let rc = RegistryClient::new(&wharf.url());
    rc.push_image("prj/app", "v1", &image).await;
    rc.push_image("other/app", "v1", &image).await;
    let pushes = expect_events(&wharf, "type=PUSH_ARTIFACT", 2).await;
    assert_eq!(pushes[0]["project"], "prj");
    assert_eq!(pushes[0]["public"], true);
    assert_eq!(
        default_payload(&pushes[0])["event_data"]["repository"]["repo_type"],
        "public"
    );
    assert_eq!(pushes[1]["project"], "other");
    assert_eq!(pushes[1]["public"], false);

    let pull = |repo: &'static str, ua: &'static str| {
        let url = format!("{}/v2/{repo}/manifests/v1", wharf.url());
        async move {
            let resp = client()
                .get(url)
                .header("accept", oci::MANIFEST_V1)
                .header("user-agent", ua)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap();
        }
    };
    pull("prj/app", "Trivy/0.50").await;
    expect_events(&wharf, "type=PULL_ARTIFACT", 0).await;
    // the filter is per project
    pull("other/app", "Trivy/0.50").await;
    let e = expect_last(&wharf, "type=PULL_ARTIFACT", 1).await;
    assert_eq!(e["project"], "other");
    pull("prj/app", "containers/5.24 (github.com/containers/image)").await;
    let e = expect_last(&wharf, "type=PULL_ARTIFACT&project=prj", 1).await;
    assert_eq!(e["public"], true);
    assert_eq!(
        e["user_agent"],
        "containers/5.24 (github.com/containers/image)"
    );
}

/// `events.ignore_pulls.users` applies in every project (glob patterns, by operator); and a
/// conditional GET the registry answers `304 Not Modified` is not a pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_users_everywhere_and_304_is_not_a_pull() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml("events: {ignore_pulls: {users: [\"replicat*\"]}}\n")
        .start()
        .await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[1024]);
    let rc = RegistryClient::new(&wharf.url());
    let digest = rc.push_image("prj/app", "v1", &image).await;
    rc.push_image("other/app", "v1", &image).await;
    expect_events(&wharf, "type=PUSH_ARTIFACT", 2).await;

    // the plain registry ignores Basic credentials; wharf takes the operator from them
    let pull = |repo: &'static str, user: &'static str, if_none_match: Option<String>| {
        let url = format!("{}/v2/{repo}/manifests/v1", wharf.url());
        async move {
            let mut req = client()
                .get(url)
                .header("accept", oci::MANIFEST_V1)
                .basic_auth(user, Some("secret"));
            if let Some(etag) = if_none_match {
                req = req.header("if-none-match", etag);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            resp.bytes().await.unwrap();
            status
        }
    };
    assert_eq!(pull("prj/app", "replicator", None).await, 200);
    assert_eq!(pull("other/app", "replicat-2", None).await, 200);
    expect_events(&wharf, "type=PULL_ARTIFACT", 0).await;

    // the registry answers 304 to a GET whose If-None-Match is the manifest's digest
    let etag = format!("\"{digest}\"");
    assert_eq!(pull("prj/app", "alice", Some(etag)).await, 304);
    expect_events(&wharf, "type=PULL_ARTIFACT", 0).await;

    assert_eq!(pull("prj/app", "alice", None).await, 200);
    let e = expect_last(&wharf, "type=PULL_ARTIFACT", 1).await;
    assert_eq!(e["operator"], "alice");
    assert_eq!(e["repository"], "prj/app");
}

// 11 -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_subject_is_the_operator() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[1024]);
    RegistryClient::new(&wharf.url())
        .push_image("prj/tok", "v1", &image)
        .await;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let jwt = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(
            r#"{"sub":"carol","access":[{"type":"repository","name":"prj/tok","actions":["pull"]}]}"#
        ),
        b64("not-a-signature")
    );
    let resp = client()
        .get(format!("{}/v2/prj/tok/manifests/v1", wharf.url()))
        .header("accept", oci::MANIFEST_V1)
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha256_digest(&body), image.digest);
    let e = expect_last(&wharf, "type=PULL_ARTIFACT", 1).await;
    assert_eq!(e["operator"], "carol");
    assert_eq!(default_payload(&e)["operator"], "carol");
}

// 12 -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_events_make_none() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml("events: {enabled: false}\n")
        .start()
        .await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[1024]);
    let skopeo = Skopeo::new();
    let remote = format!("docker://{}/prj/quiet:v1", wharf.host());
    skopeo.copy_ok(&image.oci_ref(), &remote, &[]).await;
    assert_eq!(skopeo.manifest_digest(&remote, &[]).await, image.digest);
    delete_manifest(&wharf.url(), "prj/quiet", &image.digest, None).await;
    tokio::time::sleep(SETTLE).await;
    let all = events(&wharf, "all=true").await;
    assert!(all.is_empty(), "{}", show(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_pushed_straight_to_the_registry_is_still_a_chart() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let helm = Helm::new();
    let tgz = helm.package("direct", "0.3.0", ChartKind::Library).await;
    let size = std::fs::metadata(&tgz).unwrap().len();
    helm.push(&tgz, &registry.host(), "prj")
        .await
        .assert_success();
    let want_chart = json!({"name": "direct", "version": "0.3.0", "type": "library", "app_version": "1.0", "size": size});

    helm.pull(&wharf.host(), "prj", "direct", "0.3.0").await;
    let e = expect_last(&wharf, "all=true", 1).await;
    assert_eq!(e["type"], "DOWNLOAD_CHART", "{e}");
    assert_eq!(e["chart"], want_chart, "{e}");
    assert_eq!(tags(&e), ["0.3.0"]);
    assert_eq!(e["size"], size);
    assert_user_agent(&e, "Helm/");

    let digest = e["digest"].as_str().unwrap().to_string();
    delete_manifest(&wharf.url(), "prj/direct", &digest, None).await;
    let e = expect_last(&wharf, "type=DELETE_CHART", 1).await;
    assert_eq!(e["chart"], want_chart, "{e}");
    assert_eq!(tags(&e), ["0.3.0"]);
    assert_eq!(e["size"], size);
    assert_eq!(events(&wharf, "all=true").await.len(), 2);
}

// 13 -----------------------------------------------------------------------------------------

/// The database fails under a running wharf (here: its `events` table vanishes): pushes and
/// pulls still succeed for the client, each lost event is logged and counted in
/// `wharf_events_lost_total`; once the table is back, events are recorded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_failure_loses_events_but_not_traffic() {
    let registry = Registry::start().await;
    let mut wharf = Wharf::builder(&registry.url()).spawn().await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[1024]);
    let rc = RegistryClient::new(&wharf.url());
    let admin = |path: &str| {
        client()
            .get(format!("{}{path}", wharf.url()))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
    };
    let lost = || async {
        let text = admin("/metrics").send().await.unwrap().text().await;
        let text = text.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("wharf_events_lost_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no wharf_events_lost_total in:\n{text}"))
    };
    // the number of events in the log, once it is at least `n`
    let logged = |n: usize| async move {
        let r = admin("/api/v1/events?all=true").send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        let have = v.as_array().map_or(0, Vec::len);
        (have >= n).then_some(have)
    };
    let db = rusqlite::Connection::open(wharf.data_dir().join("wharf.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();

    rc.push_image("prj/app", "v1", &image).await;
    assert_eq!(wait_until("the first event", WAIT, || logged(1)).await, 1);
    assert_eq!(lost().await, 0.0);

    db.execute_batch("ALTER TABLE events RENAME TO events_away")
        .unwrap();
    // a push (committed before the answer) and a pull (written in the background)
    rc.push_image("prj/app", "v2", &image).await;
    let resp = client()
        .get(format!("{}/v2/prj/app/manifests/v2", wharf.url()))
        .header("accept", oci::MANIFEST_V1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    wait_until("two lost events counted", WAIT, || async {
        (lost().await >= 2.0).then_some(())
    })
    .await;
    let log = wharf.log();
    assert_eq!(
        log.matches("event lost: database write failed").count(),
        2,
        "{log}"
    );

    db.execute_batch("ALTER TABLE events_away RENAME TO events")
        .unwrap();
    rc.push_image("prj/app", "v3", &image).await;
    assert_eq!(wait_until("the third push", WAIT, || logged(2)).await, 2);
    assert_eq!(lost().await, 2.0);
    wharf.sigterm();
    assert_eq!(
        wharf.wait_exit(Duration::from_secs(15)).await.code(),
        Some(0)
    );
}
