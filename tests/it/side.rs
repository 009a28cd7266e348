//! The side endpoint and project quotas, end to end.
//!
//! - `POST /api/v1/events/scan` with the Trivy and scanner-adapter fixtures of `fixtures/scan/`
//!   → SCANNING_COMPLETED / SCANNING_FAILED at a real receiver (Default and Legacy payloads);
//!   tag or digest completed from wharf's knowledge or from the registry; authentication
//!   (secrets never in the log of the real binary at debug level); every kind of bad input
//!   refused with a precise 400 / 413 and nothing recorded.
//! - `POST /api/v1/events/quota` → QUOTA_EXCEED.
//! - Quotas wharf enforces: a real skopeo push refused with 403 DENIED (the registry never gets
//!   the manifest), space given back by a delete, a higher limit after a restart, re-used blobs
//!   always allowed, one QUOTA_WARNING per crossing, `GET /api/v1/projects/{p}/quota`, and
//!   `wharf quota rescan` (the real binary) against plain and htpasswd registries.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::api::ApiResp as Resp;
use crate::common::oci::{self, OciImage};
use crate::common::wharf::ADMIN_PASSWORD;
use crate::common::{
    Receiver, Recorded, Registry, RegistryClient, Skopeo, Wharf, WharfBuilder, client, tools,
};
use wharf::events::format::{PayloadFormat, RenderCtx, render};

/// The side endpoint's token in every config here.
const TOKEN: &str = "side-token-4f1d2c9b8a7e6d5c";
/// Harbor's `scan_overview` key.
const MIME: &str = "application/vnd.security.vulnerability.report; version=1.1";
/// Generous bound for deliveries that start within milliseconds.
const SOON: Duration = Duration::from_secs(10);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(500);

/// The side token, and loopback webhook targets with fast retries.
fn base_yaml() -> String {
    format!(
        r#"
side_api_token: "{TOKEN}"
notification:
  allowed_target_networks: ["127.0.0.0/8"]
  webhook_job_http_client_timeout: 2
  backoff: {{initial: 100ms, multiplier: 1.0, max: 100ms, jitter: 0.0}}
"#
    )
}

fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wharf-it-side-")
        .tempdir()
        .unwrap()
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/scan")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
    /// An `Authorization` value as is.
    Raw(&'a str),
}

const ADMIN: Auth<'static> = Auth::Basic("admin", ADMIN_PASSWORD);
const SIDE: Auth<'static> = Auth::Bearer(TOKEN);

async fn call(method: reqwest::Method, url: &str, auth: Auth<'_>, body: Option<Vec<u8>>) -> Resp {
    let mut rb = client()
        .request(method.clone(), url)
        .timeout(Duration::from_secs(30));
    rb = match auth {
        Auth::None => rb,
        Auth::Bearer(t) => rb.header("authorization", format!("Bearer {t}")),
        Auth::Basic(u, p) => rb.basic_auth(u, Some(p)),
        Auth::Raw(v) => rb.header("authorization", v),
    };
    if let Some(b) = body {
        rb = rb.header("content-type", "application/json").body(b);
    }
    let r = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    Resp::read(r).await
}

/// POST raw bytes to `path` of `base`.
async fn post_raw(base: &str, path: &str, auth: Auth<'_>, body: Vec<u8>) -> Resp {
    call(
        reqwest::Method::POST,
        &format!("{base}{path}"),
        auth,
        Some(body),
    )
    .await
}

async fn post_scan(base: &str, auth: Auth<'_>, body: &Value) -> Resp {
    post_raw(
        base,
        "/api/v1/events/scan",
        auth,
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

async fn post_quota(base: &str, auth: Auth<'_>, body: &Value) -> Resp {
    post_raw(
        base,
        "/api/v1/events/quota",
        auth,
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// `GET /api/v1/projects/{project}/quota` as admin; asserts 200.
async fn quota(base: &str, project: &str) -> Value {
    call(
        reqwest::Method::GET,
        &format!("{base}/api/v1/projects/{project}/quota"),
        ADMIN,
        None,
    )
    .await
    .expect(200)
    .json()
}

async fn usage(base: &str, project: &str) -> u64 {
    quota(base, project).await["usage"].as_u64().unwrap()
}

/// The event log (every state), oldest first. `query`: e.g. `type=QUOTA_WARNING`.
async fn events(base: &str, query: &str) -> Vec<Value> {
    let r = call(
        reqwest::Method::GET,
        &format!("{base}/api/v1/events?limit=10000&all=true&{query}"),
        ADMIN,
        None,
    )
    .await
    .expect(200);
    let mut list = r.json().as_array().expect("an array of events").clone();
    list.reverse();
    list
}

fn as_event(v: &Value) -> wharf::events::Event {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not an Event ({e}): {v}"))
}

/// The payload of a stored event in `format`.
fn payload(v: &Value, format: PayloadFormat) -> Value {
    let p = render(&as_event(v), format, None, &RenderCtx::default()).unwrap();
    serde_json::from_slice(&p.body).unwrap()
}

/// Create a webhook policy in `project` for `types`, one Default target at `<rx>/default` and
/// one Legacy target at `<rx>/legacy`.
async fn subscribe(base: &str, project: &str, types: &[&str], rx: &Receiver) {
    let body = json!({
        "name": format!("side-{}", types.join("-").to_lowercase()),
        "description": "side endpoint test",
        "enabled": true,
        "event_types": types,
        "targets": [
            {"type": "http", "address": format!("{}/default", rx.url()), "skip_cert_verify": true},
            {"type": "http", "address": format!("{}/legacy", rx.url()), "payload_format": "Legacy"},
        ],
    });
    call(
        reqwest::Method::POST,
        &format!("{base}/api/v2.0/projects/{project}/webhook/policies"),
        ADMIN,
        Some(serde_json::to_vec(&body).unwrap()),
    )
    .await
    .expect(201);
}

/// A registry, a wharf in front of it with [`base_yaml`] and `extra_yaml`, and a receiver its
/// project `prj` sends `types` to ([`subscribe`]).
async fn subscribed(extra_yaml: &str, types: &[&str]) -> (Registry, Wharf, Receiver) {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(&base_yaml())
        .yaml(extra_yaml)
        .start()
        .await;
    let rx = Receiver::start().await;
    subscribe(&wharf.url(), "prj", types, &rx).await;
    (registry, wharf, rx)
}

/// The one request to `path` carrying event `id`.
fn delivery(got: &[Recorded], path: &str, id: &str) -> Value {
    let v: Vec<&Recorded> = got
        .iter()
        .filter(|r| r.path == path && r.header("webhook-id") == Some(id))
        .collect();
    assert_eq!(
        v.len(),
        1,
        "deliveries of {id} to {path}: {:?}",
        got.iter()
            .map(|r| (r.path.clone(), r.header("webhook-id").map(str::to_string)))
            .collect::<Vec<_>>()
    );
    v[0].json()
}

/// Sum of the unique config and layer blobs of `images` (what quota usage counts).
fn unique_blob_size(images: &[&OciImage]) -> u64 {
    let mut blobs = BTreeMap::new();
    for i in images {
        for b in i.layer_and_config_blobs() {
            blobs.insert(b.digest.clone(), b.size);
        }
    }
    blobs.values().sum()
}

/// Upload the blobs of the single-platform `image` to `repo` through `base`, then PUT its
/// manifest under `tag`; the answer to the PUT, whatever it is.
async fn try_push(base: &str, repo: &str, tag: &str, image: &OciImage) -> Resp {
    let rc = RegistryClient::new(base);
    for b in image.layer_and_config_blobs() {
        rc.upload_blob(repo, std::fs::read(image.blob_path(&b.digest)).unwrap())
            .await;
    }
    let manifest = std::fs::read(image.blob_path(&image.digest)).unwrap();
    let r = rc
        .request(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
        .header("content-type", image.media_type)
        .body(manifest)
        .send()
        .await
        .unwrap();
    Resp::read(r).await
}

/// `DELETE /v2/<repo>/manifests/<digest>` through `base`; asserts 202.
async fn delete_manifest(base: &str, repo: &str, digest: &str) {
    call(
        reqwest::Method::DELETE,
        &format!("{base}/v2/{repo}/manifests/{digest}"),
        Auth::None,
        None,
    )
    .await
    .expect(202);
}

/// Harbor's sizes (`2.1 MiB`), written independently of wharf's formatter.
fn human(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let units = ["KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

fn exceed_message(adding: u64, usage: u64, limit: u64) -> String {
    format!(
        "adding {} of storage resource, which when updated to current usage of {} will exceed the configured upper limit of {}.",
        human(adding),
        human(usage),
        human(limit)
    )
}

// 1 ------------------------------------------------------------------------------------------
// scan reports through a real receiver

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_reports_reach_a_receiver_in_default_and_legacy_format() {
    let (_registry, wharf, rx) = subscribed("", &["SCANNING_COMPLETED", "SCANNING_FAILED"]).await;
    let base = wharf.url();
    let work = work_dir();
    let image = oci::build_image(&work.path().join("img"), "latest", &[4096]);
    RegistryClient::new(&base)
        .push_image("prj/repo1", "latest", &image)
        .await;

    // Trivy, by tag (the digest is filled in); adapter, by digest (the tag is filled in);
    // a failed scan.
    let trivy = post_scan(
        &base,
        SIDE,
        &json!({"repository": "prj/repo1", "tag": "latest", "status": "Success",
                "operator": "trivy-adapter", "report": fixture("trivy-alpine.json")}),
    )
    .await
    .expect(201)
    .json();
    assert_eq!(trivy["type"], "SCANNING_COMPLETED");
    assert_eq!(trivy["digest"], image.digest.as_str(), "{trivy}");
    let adapter = post_scan(
        &base,
        SIDE,
        &json!({"repository": "prj/repo1", "digest": image.digest, "status": "Success",
                "operator": "harbor-scanner-trivy", "report": fixture("adapter-report.json")}),
    )
    .await
    .expect(201)
    .json();
    assert_eq!(adapter["tags"], json!(["latest"]), "{adapter}");
    let failed = post_scan(
        &base,
        SIDE,
        &json!({"repository": "prj/repo1", "tag": "latest", "status": "Error",
                "error": "failed to analyze image: layer sha256:8921db27 not found",
                "report": {"scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "v0.50.1"}}}),
    )
    .await
    .expect(201)
    .json();
    assert_eq!(failed["type"], "SCANNING_FAILED");

    rx.wait_for(6, SOON).await;
    rx.expect_no_more_than(6, QUIET).await;
    let got = rx.requests();

    // --- Trivy, Default
    let id = trivy["event_id"].as_str().unwrap();
    let v = delivery(&got, "/default", id);
    assert_eq!(v["type"], "SCANNING_COMPLETED");
    assert_eq!(v["operator"], "trivy-adapter");
    assert_eq!(v["event_data"]["repository"]["namespace"], "prj");
    assert_eq!(v["event_data"]["repository"]["name"], "repo1");
    let r = &v["event_data"]["resources"][0];
    assert_eq!(r["tag"], "latest");
    assert_eq!(r["digest"], image.digest.as_str());
    assert_eq!(r["image_name"], "prj/repo1:latest");
    assert_eq!(
        r["media_type"],
        oci::MANIFEST_V1,
        "known from the push: {r}"
    );
    let o = &r["scan_overview"][MIME];
    assert_eq!(o["scan_status"], "Success", "{o}");
    assert_eq!(o["severity"], "Critical");
    assert_eq!(o["complete_percent"], 100);
    assert_eq!(
        o["end_time"], "2026-11-20T10:15:42Z",
        "the report's CreatedAt"
    );
    assert_eq!(
        o["summary"],
        json!({"total": 7, "fixable": 5, "summary":
            {"Critical": 1, "High": 2, "Medium": 2, "Low": 1, "Unknown": 1}})
    );
    assert_eq!(o["scanner"]["name"], "Trivy");
    assert_eq!(o["scanner"]["vendor"], "Aqua Security");
    assert!(o["report_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(o["vulnerabilities_truncated"], false);
    let vulns = o["vulnerabilities"].as_array().unwrap();
    assert_eq!(vulns.len(), 7);
    // most severe first
    assert_eq!(vulns[0]["id"], "CVE-2023-5363");
    assert_eq!(vulns[0]["severity"], "Critical");
    assert_eq!(vulns[0]["fix_version"], "3.0.12-r0");
    assert_eq!(
        vulns[0]["link"],
        "https://avd.aquasec.com/nvd/cve-2023-5363"
    );
    assert_eq!(
        vulns[0]["fix_link"],
        "https://www.openssl.org/news/secadv/20231024.txt"
    );
    assert!(
        vulns[0]["description"]
            .as_str()
            .unwrap()
            .starts_with("Issue summary: A bug has been identified")
    );
    let severities: Vec<&str> = vulns
        .iter()
        .map(|v| v["severity"].as_str().unwrap())
        .collect();
    assert_eq!(
        severities,
        [
            "Critical", "High", "High", "Medium", "Medium", "Low", "Unknown"
        ]
    );
    let ghsa = vulns
        .iter()
        .find(|v| v["id"] == "GHSA-j8r2-6x86-q33q")
        .unwrap();
    assert_eq!(ghsa["severity"], "Medium");
    assert_eq!(ghsa["fix_version"], "2.31.0");
    assert_eq!(ghsa["package"], "requests");
    assert_eq!(
        ghsa["link"],
        "https://github.com/advisories/GHSA-j8r2-6x86-q33q"
    );
    let unknown = vulns.iter().find(|v| v["id"] == "CVE-2024-0000").unwrap();
    assert_eq!(unknown["severity"], "Unknown");
    assert!(unknown.get("fix_version").is_none(), "{unknown}");
    assert!(
        unknown.get("link").is_none(),
        "no URL in the report: {unknown}"
    );
    assert_eq!(
        unknown["description"], "zlib: placeholder advisory without a severity score",
        "the Title stands in for a missing Description"
    );
    let busybox = vulns.iter().find(|v| v["id"] == "CVE-2023-42363").unwrap();
    assert!(busybox.get("fix_version").is_none(), "not fixable");

    // --- Trivy, Legacy
    let l = delivery(&got, "/legacy", id);
    assert_eq!(l["event_type"], "scanningCompleted");
    let ev = &l["events"][0];
    assert_eq!(ev["project"], "prj");
    assert_eq!(ev["repo_name"], "repo1");
    assert_eq!(ev["tag"], "latest");
    assert_eq!(ev["image_id"], image.digest.trim_start_matches("sha256:"));
    assert_eq!(ev["operator"], "trivy-adapter");
    assert_eq!(ev["scan_status"], "Success");
    assert_eq!(ev["severity"], "Critical");
    assert_eq!(ev["critical"], 1);
    assert_eq!(ev["major"], 2);
    assert_eq!(ev["minor"], 3, "Medium + Low");
    assert_eq!(ev["severity_counts"]["fixable"], 5);
    assert_eq!(ev["severity_counts"]["unknown"], 1);
    let created = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:15:42Z").unwrap();
    assert_eq!(ev["completed_at"], created.timestamp());
    assert_eq!(ev["vulnerabilities"].as_array().unwrap().len(), 7);

    // --- adapter, Default
    let id = adapter["event_id"].as_str().unwrap();
    let v = delivery(&got, "/default", id);
    assert_eq!(v["operator"], "harbor-scanner-trivy");
    let r = &v["event_data"]["resources"][0];
    assert_eq!(r["tag"], "latest", "filled in from what wharf knows");
    assert_eq!(r["digest"], image.digest.as_str());
    let o = &r["scan_overview"][MIME];
    assert_eq!(
        o["summary"],
        json!({"total": 6, "fixable": 3, "summary":
            {"Critical": 1, "High": 1, "Medium": 1, "Low": 2, "Unknown": 1}}),
        "Negligible counts as Low: {o}"
    );
    assert_eq!(o["severity"], "Critical");
    assert_eq!(o["end_time"], "2026-11-20T10:20:00Z");
    assert_eq!(
        o["scanner"],
        json!({"name": "Trivy", "vendor": "Aqua Security", "version": "v0.50.1"})
    );
    let vulns = o["vulnerabilities"].as_array().unwrap();
    assert_eq!(vulns.len(), 6);
    assert_eq!(vulns[0]["id"], "CVE-2023-5363");
    assert_eq!(vulns[0]["fix_version"], "3.0.12-r0");
    assert_eq!(
        vulns[0]["fix_link"],
        "https://www.openssl.org/news/secadv/20231024.txt"
    );
    let negligible = vulns.iter().find(|v| v["id"] == "CVE-2018-25032").unwrap();
    assert_eq!(negligible["severity"], "Low");
    let busybox = vulns.iter().find(|v| v["id"] == "CVE-2023-42363").unwrap();
    assert!(
        busybox.get("fix_version").is_none(),
        "an empty fix_version is no fix: {busybox}"
    );
    assert_eq!(
        busybox["link"],
        "https://avd.aquasec.com/nvd/cve-2023-42363"
    );
    let l = delivery(&got, "/legacy", id);
    assert_eq!(l["events"][0]["scanner"]["version"], "v0.50.1");
    assert_eq!(l["events"][0]["minor"], 3);

    // --- failed
    let id = failed["event_id"].as_str().unwrap();
    let v = delivery(&got, "/default", id);
    assert_eq!(v["type"], "SCANNING_FAILED");
    assert_eq!(v["operator"], "auto", "no operator given");
    let o = &v["event_data"]["resources"][0]["scan_overview"][MIME];
    assert_eq!(o["scan_status"], "Error");
    assert_eq!(
        o["error"],
        "failed to analyze image: layer sha256:8921db27 not found"
    );
    assert_eq!(o["scanner"]["version"], "v0.50.1");
    assert_eq!(o["summary"]["total"], 0);
    let l = delivery(&got, "/legacy", id);
    assert_eq!(l["event_type"], "scanningFailed");
    assert_eq!(
        l["events"][0]["error"],
        "failed to analyze image: layer sha256:8921db27 not found"
    );

    // the event log has the three, nothing else besides the push
    let log = events(&base, "").await;
    let kinds: Vec<&str> = log.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "PUSH_ARTIFACT",
            "SCANNING_COMPLETED",
            "SCANNING_COMPLETED",
            "SCANNING_FAILED"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vulnerability_list_is_capped_but_counts_stay_complete() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(&base_yaml())
        .yaml("side: {max_vulnerabilities: 2}\n")
        .start()
        .await;
    let base = wharf.url();
    for name in ["trivy-alpine.json", "adapter-report.json"] {
        post_scan(
            &base,
            SIDE,
            &json!({"repository": "prj/repo1", "tag": "latest", "status": "Success",
                    "report": fixture(name)}),
        )
        .await
        .expect(201);
    }
    // a clean report: nothing to list, nothing truncated
    post_scan(
        &base,
        SIDE,
        &json!({"repository": "prj/distroless", "tag": "nonroot", "status": "Success",
                "report": fixture("trivy-clean.json")}),
    )
    .await
    .expect(201);
    let log = events(&base, "type=SCANNING_COMPLETED").await;
    assert_eq!(log.len(), 3);
    for (e, total, ids) in [
        (&log[0], 7, ["CVE-2023-5363", "CVE-2023-0286"]),
        (&log[1], 6, ["CVE-2023-5363", "CVE-2023-0286"]),
    ] {
        let p = payload(e, PayloadFormat::Default);
        let o = &p["event_data"]["resources"][0]["scan_overview"][MIME];
        let listed: Vec<&str> = o["vulnerabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, ids, "the two most severe: {o}");
        assert_eq!(o["vulnerabilities_truncated"], true);
        assert_eq!(o["summary"]["total"], total, "counts stay complete");
        assert_eq!(e["scan"]["counts"]["total"], total);
    }
    let clean = payload(&log[2], PayloadFormat::Default);
    let o = &clean["event_data"]["resources"][0]["scan_overview"][MIME];
    assert_eq!(o["severity"], "None");
    assert_eq!(o["summary"]["total"], 0);
    assert_eq!(o["vulnerabilities"], json!([]));
    assert_eq!(o["vulnerabilities_truncated"], false);
    assert_eq!(o["end_time"], "2026-11-20T11:00:00Z");
}

// 2 ------------------------------------------------------------------------------------------
// tag or digest, completed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_or_digest_is_filled_in_from_knowledge_or_the_registry() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(&base_yaml())
        .start()
        .await;
    let base = wharf.url();
    let work = work_dir();
    let known = oci::build_image(&work.path().join("known"), "v1", &[2048]);
    RegistryClient::new(&base)
        .push_image("prj/app", "v1", &known)
        .await;
    let report = json!({"vulnerabilities": [{"id": "CVE-2023-0286", "severity": "High"}]});
    let scan = |subject: Value| {
        let mut body = json!({"repository": "prj/app", "status": "Success", "report": report});
        for (k, v) in subject.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };

    // pushed through wharf: tag only → digest, digest only → tags
    let a = post_scan(&base, SIDE, &scan(json!({"tag": "v1"})))
        .await
        .expect(201)
        .json();
    assert_eq!(a["digest"], known.digest.as_str(), "{a}");
    let b = post_scan(&base, SIDE, &scan(json!({"digest": known.digest})))
        .await
        .expect(201)
        .json();
    assert_eq!(b["tags"], json!(["v1"]), "{b}");
    let log = events(&base, "type=SCANNING_COMPLETED").await;
    for e in &log {
        assert_eq!(e["digest"], known.digest.as_str());
        assert_eq!(e["tags"], json!(["v1"]));
        assert_eq!(e["media_type"], oci::MANIFEST_V1);
        assert_eq!(
            e["size"],
            unique_blob_size(&[&known]),
            "size known from the push: {e}"
        );
        assert_eq!(
            e["resource_url"],
            format!("{}/prj/app:v1", wharf.host()),
            "{e}"
        );
    }

    // pushed straight to the registry, behind wharf's back: the registry knows
    let direct = oci::build_image(&work.path().join("direct"), "v2", &[2048]);
    RegistryClient::new(&registry.url())
        .push_image("prj/direct", "v2", &direct)
        .await;
    let c = post_scan(
        &base,
        SIDE,
        &json!({"repository": "prj/direct", "tag": "v2", "status": "Error", "error": "timeout"}),
    )
    .await
    .expect(201)
    .json();
    assert_eq!(
        c["digest"],
        direct.digest.as_str(),
        "from the registry: {c}"
    );
    let d = post_scan(
        &base,
        SIDE,
        &json!({"repository": "prj/direct", "digest": direct.digest, "status": "Error",
                "error": "timeout"}),
    )
    .await
    .expect(201)
    .json();
    assert_eq!(d["tags"], json!(["v2"]), "from the registry: {d}");

    // what nobody knows stays empty, and is still recorded
    let e = post_scan(
        &base,
        SIDE,
        &json!({"repository": "prj/nothing", "tag": "v9", "status": "Error", "error": "no such image"}),
    )
    .await
    .expect(201)
    .json();
    assert_eq!(e["digest"], Value::Null, "{e}");
    assert_eq!(e["tags"], json!(["v9"]));

    // both given: taken as they are
    let f = post_scan(
        &base,
        SIDE,
        &scan(json!({"tag": "other", "digest": known.digest})),
    )
    .await
    .expect(201)
    .json();
    assert_eq!(f["tags"], json!(["other"]));
    assert_eq!(f["digest"], known.digest.as_str());
}

// 4 ------------------------------------------------------------------------------------------
// authentication, and secrets kept out of the log

fn htpasswd_file(dir: &Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = String::new();
    for (u, p) in users {
        let out = std::process::Command::new(tools::htpasswd())
            .args(["-Bbn", u, p])
            .output()
            .unwrap();
        assert!(out.status.success());
        text.push_str(String::from_utf8(out.stdout).unwrap().trim());
        text.push('\n');
    }
    let file = dir.join("users.htpasswd");
    std::fs::write(&file, text).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_endpoint_authentication_and_no_secret_in_the_log() {
    const ALICE_PW: &str = "alice-Secret-Pw-77";
    const WRONG: &str = "wrong-token-9e8d7c6b5a4f3e2d";
    let registry = Registry::start().await;
    let dir = work_dir();
    let users = htpasswd_file(dir.path(), &[("alice", ALICE_PW)]);
    let wharf = WharfBuilder::new(&registry.url())
        .yaml(&base_yaml())
        .yaml(&format!(
            "log: {{level: debug}}\nusers: {{htpasswd: {}}}\nprojects: {{prj: {{admins: [alice]}}}}\n",
            users.display()
        ))
        .spawn()
        .await;
    let base = wharf.url();
    let body =
        json!({"repository": "prj/repo1", "tag": "latest", "status": "Error", "error": "boom"});
    let qbody = json!({"repository": "prj/repo1", "tag": "latest", "details": "over quota"});

    // refused: nothing, a wrong token, a wrong password, a token sent as Basic, a project admin
    for (auth, status) in [
        (Auth::None, 401),
        (Auth::Bearer(WRONG), 401),
        (Auth::Bearer(""), 401),
        (Auth::Raw(&format!("Bearer {TOKEN}x")), 401),
        (Auth::Basic("admin", WRONG), 401),
        (Auth::Basic("side-api", TOKEN), 401),
        (Auth::Raw(&format!("Token {TOKEN}")), 401),
        (Auth::Basic("alice", ALICE_PW), 403),
    ] {
        let r = post_scan(&base, auth, &body).await.expect(status);
        if status == 401 {
            assert!(
                r.headers.contains_key("www-authenticate"),
                "{:?}",
                r.headers
            );
        }
        post_quota(&base, auth, &qbody).await.expect(status);
    }
    assert!(events(&base, "").await.is_empty(), "nothing recorded");

    // accepted: the token (any case of the scheme), the system administrator
    for auth in [SIDE, Auth::Raw(&format!("bearer {TOKEN}")), ADMIN] {
        post_scan(&base, auth, &body).await.expect(201);
        post_quota(&base, auth, &qbody).await.expect(201);
    }
    let log = events(&base, "").await;
    assert_eq!(log.len(), 6);
    // the quota report's operator defaults to the caller, never to a secret
    let ops: Vec<&str> = log
        .iter()
        .filter(|e| e["type"] == "QUOTA_EXCEED")
        .map(|e| e["operator"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["side-api", "side-api", "admin"]);

    let text = wharf.log();
    assert!(text.contains("DEBUG"), "the log is at debug level:\n{text}");
    assert!(text.contains("scan report received"), "{text}");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [
        TOKEN.to_string(),
        WRONG.to_string(),
        ALICE_PW.to_string(),
        ADMIN_PASSWORD.to_string(),
        b64(&format!("alice:{ALICE_PW}")),
        b64(&format!("admin:{ADMIN_PASSWORD}")),
        b64(&format!("side-api:{TOKEN}")),
    ] {
        assert!(
            !text.contains(&secret),
            "{secret} appears in the log:\n{text}"
        );
    }
}

// 5 ------------------------------------------------------------------------------------------
// bad input: a precise 400 (or 413), and nothing recorded

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_precisely_and_records_nothing() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(&base_yaml())
        .yaml("side: {max_body: 1KiB}\n")
        .start()
        .await;
    let base = wharf.url();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let ok_report = json!({"vulnerabilities": [{"id": "CVE-1", "severity": "Low"}]});
    let scan = |patch: Value| {
        let mut b = json!({"repository": "prj/repo1", "tag": "latest", "status": "Success",
                           "report": ok_report});
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        serde_json::to_vec(&b).unwrap()
    };
    // (body, what the message must start with, what else it must say)
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "malformed JSON",
            b"{\"repository\": \"prj/repo1\",".to_vec(),
            "body:",
            "EOF",
        ),
        (
            "not an object",
            b"[\"prj/repo1\", \"latest\"]".to_vec(),
            "body:",
            "object",
        ),
        ("empty body", Vec::new(), "body:", "EOF"),
        (
            "missing repository",
            scan(json!({"repository": null})),
            "body:",
            "`repository`",
        ),
        (
            "repository of the wrong type",
            scan(json!({"repository": 5})),
            "repository:",
            "string",
        ),
        (
            "bad repository name",
            scan(json!({"repository": "Prj/Repo One"})),
            "repository:",
            "Prj/Repo One",
        ),
        (
            "bad digest",
            scan(json!({"digest": "sha256:xyz"})),
            "digest:",
            "sha256:xyz",
        ),
        (
            "bad tag",
            scan(json!({"tag": "no tag!", "digest": digest})),
            "tag:",
            "no tag!",
        ),
        (
            "neither tag nor digest",
            scan(json!({"tag": null})),
            "tag, digest:",
            "at least one",
        ),
        (
            "missing status",
            scan(json!({"status": null})),
            "body:",
            "`status`",
        ),
        (
            "unknown status",
            scan(json!({"status": "Done"})),
            "status:",
            "Done",
        ),
        (
            "Success without report",
            scan(json!({"report": null})),
            "report:",
            "Success",
        ),
        (
            "Error without error",
            scan(json!({"status": "Error", "report": null})),
            "error:",
            "Error",
        ),
        (
            "Error with a blank error",
            scan(json!({"status": "Error", "error": "  "})),
            "error:",
            "Error",
        ),
        (
            "report of unknown shape",
            scan(json!({"report": {"foo": 1}})),
            "report:",
            "Trivy",
        ),
        (
            "Trivy report of the wrong shape",
            scan(json!({"report": {"Results": "none"}})),
            "report.Results:",
            "Trivy",
        ),
        (
            "Trivy vulnerability without id",
            scan(
                json!({"report": {"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{"Severity": "HIGH"}]}]}}),
            ),
            "report.Results[0].Vulnerabilities[0]:",
            "`VulnerabilityID`",
        ),
        (
            "adapter vulnerability without id",
            scan(json!({"report": {"vulnerabilities": [{"severity": "High"}]}})),
            "report.vulnerabilities[0]:",
            "`id`",
        ),
        (
            "report not an object",
            scan(json!({"report": [1]})),
            "report:",
            "neither",
        ),
        (
            "unknown top-level field",
            scan(json!({"token": "x"})),
            "token:",
            "unknown field",
        ),
    ];
    for (what, body, prefix, says) in cases {
        let r = post_raw(&base, "/api/v1/events/scan", SIDE, body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        let (code, message) = r.error();
        assert_eq!(code, "BAD_REQUEST", "{what}");
        assert!(
            message.starts_with(prefix) && message.contains(says),
            "{what}: {message:?} should start with {prefix:?} and mention {says:?}"
        );
    }
    let quota_cases: Vec<(&str, Value, &str)> = vec![
        (
            "missing details",
            json!({"repository": "prj/repo1", "tag": "v1"}),
            "`details`",
        ),
        (
            "blank details",
            json!({"repository": "prj/repo1", "tag": "v1", "details": " "}),
            "details:",
        ),
        (
            "bad digest",
            json!({"repository": "prj/repo1", "digest": "md5:", "details": "x"}),
            "digest:",
        ),
        (
            "neither tag nor digest",
            json!({"repository": "prj/repo1", "details": "x"}),
            "tag, digest:",
        ),
        (
            "bad repository",
            json!({"repository": "/prj", "tag": "v1", "details": "x"}),
            "repository:",
        ),
        (
            "unknown field",
            json!({"repository": "prj/repo1", "tag": "v1", "details": "x", "status": "Success"}),
            "`status`",
        ),
    ];
    for (what, body, says) in quota_cases {
        let r = post_quota(&base, SIDE, &body).await;
        assert_eq!(r.status, 400, "quota, {what}: {}", r.text);
        let (_, message) = r.error();
        assert!(message.contains(says), "quota, {what}: {message:?}");
    }

    // over side.max_body (1 KiB): 413, on both endpoints
    let big = serde_json::to_vec(&json!({"repository": "prj/repo1", "tag": "latest",
        "status": "Success", "report": fixture("trivy-alpine.json")}))
    .unwrap();
    assert!(big.len() > 1024);
    let r = post_raw(&base, "/api/v1/events/scan", SIDE, big.clone()).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.error().1.contains("side.max_body"), "{}", r.text);
    let r = post_quota(
        &base,
        SIDE,
        &json!({"repository": "prj/repo1", "tag": "v1", "details": "x".repeat(2000)}),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text);
    // a body without a declared length is cut just the same
    let chunks = futures_util::stream::iter(
        big.chunks(256)
            .map(|c| {
                Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::copy_from_slice(c)))
            })
            .collect::<Vec<_>>(),
    );
    let r = client()
        .post(format!("{base}/api/v1/events/scan"))
        .bearer_auth(TOKEN)
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // the token is checked before the body is read
    post_raw(&base, "/api/v1/events/scan", Auth::None, big)
        .await
        .expect(401);

    assert!(
        events(&base, "").await.is_empty(),
        "no refusal recorded anything"
    );
    // the endpoint works under the limit
    post_raw(&base, "/api/v1/events/scan", SIDE, scan(json!({})))
        .await
        .expect(201);
    assert_eq!(events(&base, "").await.len(), 1);
}

// 6 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_report_reaches_the_receiver() {
    let (_registry, wharf, rx) = subscribed("", &["QUOTA_EXCEED"]).await;
    let base = wharf.url();
    let digest = format!("sha256:{}", "9e".repeat(32));
    let details = "adding 2.1 MiB of storage resource, which when updated to current usage of 8.3 MiB will exceed the configured upper limit of 10.0 MiB.";
    let r = post_quota(
        &base,
        SIDE,
        &json!({"repository": "prj/repo1", "tag": "latest", "digest": digest,
                "operator": "quota-bot", "details": details}),
    )
    .await
    .expect(201)
    .json();
    assert_eq!(r["type"], "QUOTA_EXCEED");
    let id = r["event_id"].as_str().unwrap();
    let got = rx.wait_for(2, SOON).await;
    rx.expect_no_more_than(2, QUIET).await;
    let v = delivery(&got, "/default", id);
    assert_eq!(v["type"], "QUOTA_EXCEED");
    assert_eq!(v["operator"], "quota-bot");
    let res = &v["event_data"]["resources"][0];
    assert_eq!(res["tag"], "latest");
    assert_eq!(res["digest"], digest.as_str());
    assert_eq!(res["image_name"], "prj/repo1:latest");
    assert_eq!(v["event_data"]["repository"]["namespace"], "prj");
    assert_eq!(v["event_data"]["custom_attributes"]["Details"], details);
    let l = delivery(&got, "/legacy", id);
    assert_eq!(l["event_type"], "projectQuota");
    assert_eq!(l["events"][0]["details"], details);
    assert_eq!(l["events"][0]["operator"], "quota-bot");
}

/// POST `body` to `path` with `Idempotency-Key: key`.
async fn post_keyed(base: &str, path: &str, auth: Auth<'_>, key: &str, body: &Value) -> Resp {
    let mut rb = client()
        .post(format!("{base}{path}"))
        .header("idempotency-key", key)
        .json(body)
        .timeout(Duration::from_secs(30));
    rb = match auth {
        Auth::Bearer(t) => rb.bearer_auth(t),
        Auth::Basic(u, p) => rb.basic_auth(u, Some(p)),
        Auth::None | Auth::Raw(_) => rb,
    };
    Resp::read(rb.send().await.unwrap()).await
}

/// A report retried with its `Idempotency-Key` is answered as the first time and makes no
/// second event or delivery; the key with another request is 422; another caller's key, or a
/// report without one, is a new event; twenty requests with one key at once make one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_retried_with_its_idempotency_key_makes_one_event() {
    let (_registry, wharf, rx) = subscribed("", &["SCANNING_FAILED"]).await;
    let base = wharf.url();
    const SCAN: &str = "/api/v1/events/scan";
    let digest = format!("sha256:{}", "5c".repeat(32));
    let report = json!({"repository": "prj/app", "tag": "1.0", "digest": digest,
                        "status": "Error", "error": "layer not found"});
    let first = post_keyed(&base, SCAN, SIDE, "scan-1", &report)
        .await
        .expect(201);
    assert_eq!(first.header("idempotent-replayed"), None);
    let id = first.json()["event_id"].as_str().unwrap().to_string();
    // the retry, bare or as a quoted structured-field string: the same answer, marked
    for key in ["scan-1", "\"scan-1\""] {
        let again = post_keyed(&base, SCAN, SIDE, key, &report)
            .await
            .expect(201);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json(), first.json());
    }
    // the key with another body, or at another endpoint: 422, nothing recorded
    let other = json!({"repository": "prj/app", "tag": "1.0", "digest": digest,
                       "status": "Error", "error": "another error"});
    let r = post_keyed(&base, SCAN, SIDE, "scan-1", &other)
        .await
        .expect(422);
    assert_eq!(r.error().0, "UNPROCESSABLE_ENTITY");
    let quota = json!({"repository": "prj/app", "tag": "1.0", "digest": digest,
                       "details": "over"});
    post_keyed(&base, "/api/v1/events/quota", SIDE, "scan-1", &quota)
        .await
        .expect(422);
    // a key that is none: 400
    let r = post_keyed(&base, SCAN, SIDE, "a b", &report)
        .await
        .expect(400);
    assert!(r.error_message().contains("Idempotency-Key"), "{}", r.text);
    // another caller's key of the same name, and a report without a key: new events
    let admin = post_keyed(&base, SCAN, ADMIN, "scan-1", &report)
        .await
        .expect(201);
    assert_eq!(admin.header("idempotent-replayed"), None);
    let unkeyed = post_scan(&base, SIDE, &report).await.expect(201);
    // twenty at once with a new key: one event, every answer names it
    let racing: Vec<_> = (0..20)
        .map(|_| {
            let (base, report) = (base.clone(), report.clone());
            tokio::spawn(async move { post_keyed(&base, SCAN, SIDE, "scan-2", &report).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in racing {
        ids.insert(t.await.unwrap().expect(201).json()["event_id"].clone());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let expected: HashSet<Value> = [
        json!(id),
        admin.json()["event_id"].clone(),
        unkeyed.json()["event_id"].clone(),
        ids.into_iter().next().unwrap(),
    ]
    .into();
    assert_eq!(expected.len(), 4);
    let logged: HashSet<Value> = events(&base, "type=SCANNING_FAILED")
        .await
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(logged, expected);
    // two targets per event, each delivered once
    let got = rx.wait_for(8, SOON).await;
    rx.expect_no_more_than(8, QUIET).await;
    let delivered: HashSet<Value> = got
        .iter()
        .map(|r| json!(r.header("webhook-id").unwrap()))
        .collect();
    assert_eq!(delivered, expected);
}

// 7 ------------------------------------------------------------------------------------------
// quotas enforced on real pushes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_over_the_limit_is_refused_and_space_comes_back_on_delete() {
    let work = work_dir();
    let a = oci::build_image(&work.path().join("a"), "v1", &[40 * 1024, 8 * 1024]);
    let b = oci::build_image(&work.path().join("b"), "v1", &[40 * 1024, 8 * 1024]);
    let (size_a, size_b) = (unique_blob_size(&[&a]), unique_blob_size(&[&b]));
    let limit = size_a + size_b / 2;
    let (registry, wharf, rx) = subscribed(
        &format!("projects: {{prj: {{storage_limit: {limit}}}}}\n"),
        &["QUOTA_EXCEED"],
    )
    .await;
    let base = wharf.url();
    let skopeo = Skopeo::new();
    let to = |r: &str| format!("docker://{}/{r}", wharf.host());

    skopeo.copy_ok(&a.oci_ref(), &to("prj/a:v1"), &[]).await;
    assert_eq!(usage(&base, "prj").await, size_a);

    let started = chrono::Utc::now().timestamp();
    let out = skopeo.copy(&b.oci_ref(), &to("prj/b:v1"), &[]).await;
    assert!(!out.success(), "the push must fail:\n{out}");
    let message = exceed_message(size_b, size_a, limit);
    assert!(
        out.stderr.contains("denied") && out.stderr.contains(&message),
        "skopeo reports wharf's DENIED and its message {message:?}:\n{out}"
    );
    // the registry never received the manifest
    for reference in ["v1", b.digest.as_str()] {
        let r = call(
            reqwest::Method::GET,
            &format!("{}/v2/prj/b/manifests/{reference}", registry.url()),
            Auth::None,
            None,
        )
        .await;
        assert_eq!(r.status, 404, "{}", r.text);
        assert_eq!(r.error().0, "MANIFEST_UNKNOWN");
    }
    assert_eq!(usage(&base, "prj").await, size_a, "nothing counted");

    // exactly one QUOTA_EXCEED, with the seed's fields
    let refused = events(&base, "type=QUOTA_EXCEED").await;
    assert_eq!(refused.len(), 1, "{refused:#?}");
    let e = &refused[0];
    assert_eq!(e["repository"], "prj/b");
    assert_eq!(e["tags"], json!(["v1"]));
    assert_eq!(e["digest"], b.digest.as_str());
    assert_eq!(e["quota"]["details"], message.as_str());
    assert_eq!(e["quota"]["adding"], size_b);
    assert_eq!(e["quota"]["usage"], size_a);
    assert_eq!(e["quota"]["limit"], limit);
    assert!(
        events(&base, "repository=prj/b&type=PUSH_ARTIFACT")
            .await
            .is_empty()
    );
    let id = e["id"].as_str().unwrap();
    let got = rx.wait_for(2, SOON).await;
    let v = delivery(&got, "/default", id);
    assert_eq!(v["type"], "QUOTA_EXCEED");
    assert_eq!(v["operator"], "anonymous");
    let occur = v["occur_at"].as_i64().unwrap();
    assert!(
        (started..=chrono::Utc::now().timestamp()).contains(&occur),
        "push time {occur}"
    );
    let res = &v["event_data"]["resources"][0];
    assert_eq!(res["tag"], "v1");
    assert_eq!(res["digest"], b.digest.as_str());
    assert_eq!(res["image_name"], "prj/b:v1");
    assert_eq!(v["event_data"]["repository"]["name"], "b");
    assert_eq!(v["event_data"]["repository"]["namespace"], "prj");
    let custom = &v["event_data"]["custom_attributes"];
    assert_eq!(custom["Details"], message.as_str());
    assert_eq!(custom["limit"], limit.to_string());
    let l = delivery(&got, "/legacy", id);
    assert_eq!(l["event_type"], "projectQuota");
    assert_eq!(l["events"][0]["details"], message.as_str());
    assert_eq!(l["events"][0]["image_name"], "prj/b:v1");

    // the answer itself: 403, OCI error DENIED with that message
    let r = try_push(&base, "prj/b", "v1", &b).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.error(), ("DENIED".to_string(), message.clone()));
    assert_eq!(r.json()["errors"][0]["detail"]["limit"], limit);

    // space comes back: delete A through wharf, then B fits
    delete_manifest(&base, "prj/a", &a.digest).await;
    assert_eq!(usage(&base, "prj").await, 0);
    skopeo.copy_ok(&b.oci_ref(), &to("prj/b:v1"), &[]).await;
    assert_eq!(usage(&base, "prj").await, size_b);
    let pushed = events(&base, "repository=prj/b&type=PUSH_ARTIFACT").await;
    assert_eq!(pushed.len(), 1);

    // re-using counted blobs is always allowed: another tag, another repository
    skopeo.copy_ok(&b.oci_ref(), &to("prj/b:v2"), &[]).await;
    skopeo
        .copy_ok(&b.oci_ref(), &to("prj/mirror:v1"), &[])
        .await;
    assert_eq!(usage(&base, "prj").await, size_b, "counted once");
    // while new content still does not fit
    let out = skopeo.copy(&a.oci_ref(), &to("prj/a:v1"), &[]).await;
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains(&exceed_message(size_a, size_b, limit)),
        "{out}"
    );
    // deleting one of two references keeps the blobs counted
    delete_manifest(&base, "prj/mirror", &b.digest).await;
    assert_eq!(usage(&base, "prj").await, size_b);
    // another project has no limit
    skopeo.copy_ok(&a.oci_ref(), &to("free/a:v1"), &[]).await;
    assert_eq!(usage(&base, "free").await, size_a);
}

// 8 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_limit_after_a_restart_lets_the_refused_push_in() {
    let work = work_dir();
    let a = oci::build_image(&work.path().join("a"), "v1", &[32 * 1024]);
    let b = oci::build_image(&work.path().join("b"), "v1", &[32 * 1024]);
    let c = oci::build_image(&work.path().join("c"), "v1", &[1024]);
    let d = oci::build_image(&work.path().join("d"), "v1", &[512]);
    let (size_a, size_b, size_c) = (
        unique_blob_size(&[&a]),
        unique_blob_size(&[&b]),
        unique_blob_size(&[&c]),
    );
    let registry = Registry::start().await;
    let data_dir = work.path().join("data");
    let start = |limit: u64| {
        Wharf::builder(&registry.url())
            .yaml(&base_yaml())
            .yaml(&format!(
                "data_dir: {}\nprojects: {{prj: {{storage_limit: {limit}}}}}\n",
                data_dir.display()
            ))
            .start()
    };

    let limit = size_a + size_b / 2;
    let wharf = start(limit).await;
    try_push(&wharf.url(), "prj/a", "v1", &a).await.expect(201);
    let r = try_push(&wharf.url(), "prj/b", "v1", &b).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.error().1, exceed_message(size_b, size_a, limit));
    wharf.shutdown().await;

    // a higher limit (written as a size): B is accepted, usage carried over
    let wharf = Wharf::builder(&registry.url())
        .yaml(&base_yaml())
        .yaml(&format!(
            "data_dir: {}\nprojects: {{prj: {{storage_limit: 10MiB}}}}\n",
            data_dir.display()
        ))
        .start()
        .await;
    try_push(&wharf.url(), "prj/b", "v1", &b).await.expect(201);
    let q = quota(&wharf.url(), "prj").await;
    assert_eq!(q["limit"], 10u64 << 20);
    assert_eq!(q["usage"], size_a + size_b);
    assert!(
        events(&wharf.url(), "type=QUOTA_WARNING").await.is_empty(),
        "far below 85%"
    );
    wharf.shutdown().await;

    // exactly at the limit: C fills it (and, being above 85%, warns once), re-used blobs still
    // go in, anything new does not
    let limit = size_a + size_b + size_c;
    let wharf = start(limit).await;
    let base = wharf.url();
    try_push(&base, "prj/c", "v1", &c).await.expect(201);
    let q = quota(&base, "prj").await;
    assert_eq!(q["usage"], limit);
    assert_eq!(q["used_percent"], 100.0);
    let warnings = events(&base, "type=QUOTA_WARNING").await;
    assert_eq!(
        warnings.len(),
        1,
        "usage grew while above the threshold of a lowered limit, and nobody was warned yet"
    );
    try_push(&base, "prj/other", "v1", &a).await.expect(201);
    try_push(&base, "prj/c", "v2", &c).await.expect(201);
    assert_eq!(usage(&base, "prj").await, limit);
    let r = try_push(&base, "prj/d", "v1", &d).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        r.error().1,
        exceed_message(unique_blob_size(&[&d]), limit, limit)
    );
    assert_eq!(events(&base, "type=QUOTA_WARNING").await.len(), 1);
    wharf.shutdown().await;
}

// 9 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warning_threshold_warns_once_per_crossing() {
    let work = work_dir();
    let a = oci::build_image(&work.path().join("a"), "v1", &[50 * 1024]);
    let b = oci::build_image(&work.path().join("b"), "v1", &[40 * 1024]);
    let c = oci::build_image(&work.path().join("c"), "v1", &[5 * 1024]);
    let (sa, sb, sc) = (
        unique_blob_size(&[&a]),
        unique_blob_size(&[&b]),
        unique_blob_size(&[&c]),
    );
    let limit = (sa + sb + sc) * 102 / 100;
    let line = limit * 85 / 100;
    assert!(sa < line && sa + sb >= line && sa + sc < line && sa + sb + sc <= limit);
    let (_registry, wharf, rx) = subscribed(
        &format!("projects: {{prj: {{storage_limit: {limit}}}}}\n"),
        &["QUOTA_WARNING"],
    )
    .await;
    let base = wharf.url();
    let warnings = || events(&base, "type=QUOTA_WARNING");

    try_push(&base, "prj/a", "v1", &a).await.expect(201);
    assert!(warnings().await.is_empty(), "below the threshold");
    try_push(&base, "prj/b", "v1", &b).await.expect(201);
    let w = warnings().await;
    assert_eq!(w.len(), 1, "crossed: one warning");
    assert_eq!(w[0]["repository"], "prj/b");
    assert_eq!(w[0]["quota"]["usage"], sa + sb);
    assert_eq!(w[0]["quota"]["limit"], limit);
    let details = format!(
        "quota usage reach 85%: resource storage used {} of {}",
        human(sa + sb),
        human(limit)
    );
    assert_eq!(w[0]["quota"]["details"], details.as_str());
    let got = rx.wait_for(2, SOON).await;
    let v = delivery(&got, "/default", w[0]["id"].as_str().unwrap());
    assert_eq!(v["type"], "QUOTA_WARNING");
    assert_eq!(
        v["event_data"]["custom_attributes"]["Details"],
        details.as_str()
    );
    assert_eq!(v["event_data"]["resources"][0]["image_name"], "prj/b:v1");
    assert_eq!(
        delivery(&got, "/legacy", w[0]["id"].as_str().unwrap())["event_type"],
        "projectQuotaWarning"
    );

    try_push(&base, "prj/c", "v1", &c).await.expect(201);
    assert_eq!(warnings().await.len(), 1, "still above: no second warning");
    // a second tag of a counted image changes nothing
    try_push(&base, "prj/b", "v2", &b).await.expect(201);
    assert_eq!(warnings().await.len(), 1);

    delete_manifest(&base, "prj/b", &b.digest).await;
    assert_eq!(usage(&base, "prj").await, sa + sc, "below again: re-armed");
    assert_eq!(warnings().await.len(), 1, "a delete never warns");
    try_push(&base, "prj/b", "v1", &b).await.expect(201);
    let w = warnings().await;
    assert_eq!(w.len(), 2, "crossed again: a second warning");
    assert_eq!(w[1]["quota"]["usage"], sa + sb + sc);
    rx.wait_for(4, SOON).await;
    rx.expect_no_more_than(4, QUIET).await;
}

// 10 -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_quota_shows_limit_and_usage_of_unique_blobs() {
    let work = work_dir();
    let a = oci::build_image(&work.path().join("a"), "v1", &[16 * 1024, 4096]);
    let idx = oci::build_index(&work.path().join("i"), "v1", &[8 * 1024]);
    let dir = work_dir();
    let users = htpasswd_file(dir.path(), &[("alice", "alice-pw-1"), ("bob", "bob-pw-1")]);
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(&base_yaml())
        .yaml(&format!(
            "users: {{htpasswd: {}}}\nprojects: {{prj: {{storage_limit: 1MiB, admins: [alice]}}, free: {{admins: [bob]}}}}\n",
            users.display()
        ))
        .start()
        .await;
    let base = wharf.url();
    let rc = RegistryClient::new(&base);
    rc.push_image("prj/a", "v1", &a).await;
    rc.push_image("prj/multi", "v1", &idx).await;
    // the same image in a second repository, and a second tag: no more usage
    rc.push_image("prj/copy", "v1", &a).await;
    rc.push_image("prj/a", "v2", &a).await;
    rc.push_image("free/a", "v1", &a).await;

    let expected = unique_blob_size(&[&a, &idx]);
    let q = quota(&base, "prj").await;
    assert_eq!(q["project"], "prj");
    assert_eq!(q["limit"], 1u64 << 20);
    assert_eq!(q["usage"], expected, "{q}");
    let percent = (expected as f64 * 10000.0 / (1u64 << 20) as f64).round() / 100.0;
    assert_eq!(q["used_percent"], percent);
    assert_eq!(q["warning_threshold"], 85);
    assert_eq!(q["limit_human"], "1.0 MiB");
    assert_eq!(q["usage_human"], human(expected));

    let q = quota(&base, "free").await;
    assert_eq!(q["limit"], Value::Null);
    assert_eq!(q["used_percent"], Value::Null);
    assert_eq!(q["usage"], unique_blob_size(&[&a]));
    assert_eq!(quota(&base, "nothing").await["usage"], 0);

    // who may read it
    let get = |project: &str, auth: Auth<'static>| {
        let url = format!("{base}/api/v1/projects/{project}/quota");
        async move { call(reqwest::Method::GET, &url, auth, None).await.status }
    };
    assert_eq!(get("prj", Auth::Basic("alice", "alice-pw-1")).await, 200);
    assert_eq!(get("prj", Auth::Basic("bob", "bob-pw-1")).await, 403);
    assert_eq!(get("prj", Auth::None).await, 401);
    assert_eq!(get("prj", Auth::Basic("alice", "wrong")).await, 401);
    assert_eq!(get("Bad_Name", ADMIN).await, 400);

    // pulls do not change usage; deleting the index gives back nothing its children still hold
    let before = usage(&base, "prj").await;
    let r = client()
        .get(format!("{base}/v2/prj/a/manifests/v1"))
        .header("accept", oci::MANIFEST_V1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    delete_manifest(&base, "prj/multi", &idx.digest).await;
    assert_eq!(usage(&base, "prj").await, before);
    for p in &idx.platforms {
        delete_manifest(&base, "prj/multi", &p.manifest.digest).await;
    }
    assert_eq!(usage(&base, "prj").await, unique_blob_size(&[&a]));
}

// 11 -----------------------------------------------------------------------------------------
// wharf quota rescan

/// Run `wharf ARGS…` (the real binary), `stdin` written to its standard input.
async fn wharf_cmd(args: &[&str], stdin: Option<&str>) -> crate::common::CmdOutput {
    use tokio::io::AsyncWriteExt as _;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for k in crate::common::tools::wharf_env_vars() {
        cmd.env_remove(k);
    }
    cmd.env_remove("RUST_LOG");
    let command = crate::common::cmd::describe(cmd.as_std());
    let mut child = cmd.spawn().expect("starting the wharf binary");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("wharf quota rescan finished in time")
        .unwrap();
    crate::common::CmdOutput {
        command,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A config for `data_dir` written to `<dir>/wharf.yaml`, as `WharfProcess` writes its own.
fn write_config(builder: &WharfBuilder, dir: &Path, data_dir: &Path) -> String {
    let path = dir.join("wharf.yaml");
    std::fs::write(&path, builder.render(data_dir)).unwrap();
    path.display().to_string()
}

/// A rescan that cannot read the registry fails and says why, naming what it asked: no
/// catalog API (404), a catalog that is not JSON, another status, nothing listening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_says_why_the_registry_could_not_be_scanned() {
    use axum::routing::get;
    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }
    let closed = format!("http://127.0.0.1:{}", crate::common::closed_port());
    let cases = [
        (
            serve(axum::Router::new()).await,
            "registry: GET /v2/_catalog: HTTP 404 (does the registry serve the catalog API?)"
                .to_string(),
        ),
        (
            serve(axum::Router::new().route("/v2/_catalog", get(|| async { "not json" }))).await,
            "registry: GET /v2/_catalog?n=1000: expected ident at line 1 column 2".to_string(),
        ),
        (
            serve(axum::Router::new().route(
                "/v2/_catalog",
                get(|| async { http::StatusCode::UNAUTHORIZED }),
            ))
            .await,
            "registry: GET /v2/_catalog?n=1000: HTTP 401 Unauthorized".to_string(),
        ),
        (closed, "registry unreachable".to_string()),
    ];
    for (registry, expected) in cases {
        let work = work_dir();
        let builder = Wharf::builder(&registry).yaml(&base_yaml());
        let config = write_config(&builder, work.path(), &work.path().join("data"));
        let out = wharf_cmd(&["quota", "rescan", "--config", &config], None)
            .await
            .assert_failure();
        assert!(out.stderr.contains(&expected), "{expected}\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_learns_usage_of_content_pushed_before_wharf() {
    let work = work_dir();
    let a = oci::build_image(&work.path().join("a"), "v1", &[24 * 1024]);
    let idx = oci::build_index(&work.path().join("i"), "multi", &[8 * 1024]);
    let registry = Registry::start().await;
    let skopeo = Skopeo::new();
    let to = |r: &str| format!("docker://{}/{r}", registry.host());
    skopeo.copy_ok(&a.oci_ref(), &to("prj/a:v1"), &[]).await;
    skopeo
        .copy_ok(&a.oci_ref(), &to("prj/a-copy:v1"), &[])
        .await;
    skopeo
        .copy_ok(&idx.oci_ref(), &to("prj/multi:v1"), &["--all"])
        .await;
    skopeo.copy_ok(&a.oci_ref(), &to("other/a:v1"), &[]).await;
    // repositories without tags: an image pushed by digest only, and one deleted again
    let untagged = oci::build_image(&work.path().join("u"), "v1", &[4096]);
    let direct = RegistryClient::new(&registry.url());
    direct
        .push_image("prj/untagged", &untagged.digest, &untagged)
        .await;
    direct.push_image("prj/gone", "v1", &untagged).await;
    delete_manifest(&registry.url(), "prj/gone", &untagged.digest).await;
    let expected = unique_blob_size(&[&a, &idx]);

    let limit = expected + 4096;
    let builder = Wharf::builder(&registry.url())
        .yaml(&base_yaml())
        .yaml(&format!("projects: {{prj: {{storage_limit: {limit}}}}}\n"));
    let data_dir = work.path().join("data");
    let config = write_config(&builder, work.path(), &data_dir);
    let out = wharf_cmd(&["quota", "rescan", "--config", &config], None)
        .await
        .assert_success();
    assert!(
        out.stdout
            .contains("scanned 6 repositories, 6 manifests (6 new to wharf)"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("prj: {} of {}", human(expected), human(limit))),
        "{out}"
    );

    let wharf = builder
        .clone()
        .yaml(&format!("data_dir: {}\n", data_dir.display()))
        .start()
        .await;
    let base = wharf.url();
    assert_eq!(usage(&base, "prj").await, expected);
    assert_eq!(usage(&base, "other").await, unique_blob_size(&[&a]));

    // again, while wharf serves: nothing counted twice
    let out = wharf_cmd(&["quota", "rescan", "--config", &config], None)
        .await
        .assert_success();
    assert!(out.stdout.contains("(0 new to wharf)"), "{out}");
    assert_eq!(usage(&base, "prj").await, expected);

    // the usage it learned is enforced
    let c = oci::build_image(&work.path().join("c"), "v1", &[8 * 1024]);
    let r = try_push(&base, "prj/c", "v1", &c).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        r.error().1,
        exceed_message(unique_blob_size(&[&c]), expected, limit)
    );
    // and what it learned lets deletes give space back
    delete_manifest(&base, "prj/multi", &idx.digest).await;
    for p in &idx.platforms {
        delete_manifest(&base, "prj/multi", &p.manifest.digest).await;
    }
    assert_eq!(usage(&base, "prj").await, unique_blob_size(&[&a]));
    try_push(&base, "prj/c", "v1", &c).await.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_counts_what_wharf_knew_before_it_kept_quotas() {
    // A wharf from before quotas knew artifacts (pushed through it) without counting them:
    // simulated by emptying the usage tables of a database that knows an image.
    let work = work_dir();
    let a = oci::build_image(&work.path().join("a"), "v1", &[16 * 1024]);
    let b = oci::build_image(&work.path().join("b"), "v1", &[16 * 1024]);
    let registry = Registry::start().await;
    let data_dir = work.path().join("data");
    let builder = Wharf::builder(&registry.url())
        .yaml(&base_yaml())
        .yaml(&format!("data_dir: {}\n", data_dir.display()));
    let wharf = builder.clone().start().await;
    try_push(&wharf.url(), "prj/a", "v1", &a).await.expect(201);
    wharf.shutdown().await;
    {
        let db = rusqlite::Connection::open(data_dir.join("wharf.db")).unwrap();
        db.execute_batch("DELETE FROM project_blobs; DELETE FROM quota_projects;")
            .unwrap();
    }
    // and one image pushed straight to the registry
    RegistryClient::new(&registry.url())
        .push_image("prj/b", "v1", &b)
        .await;

    let config = write_config(&builder, work.path(), &data_dir);
    wharf_cmd(&["quota", "rescan", "--config", &config], None)
        .await
        .assert_success();
    let wharf = builder.clone().start().await;
    assert_eq!(
        usage(&wharf.url(), "prj").await,
        unique_blob_size(&[&a, &b]),
        "the image wharf already knew is counted too"
    );
    // deleting it gives its space back, once
    delete_manifest(&wharf.url(), "prj/a", &a.digest).await;
    assert_eq!(usage(&wharf.url(), "prj").await, unique_blob_size(&[&b]));
    wharf.shutdown().await;
    wharf_cmd(&["quota", "rescan", "--config", &config], None)
        .await
        .assert_success();
    let wharf = builder.start().await;
    assert_eq!(usage(&wharf.url(), "prj").await, unique_blob_size(&[&b]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_of_an_htpasswd_registry_takes_credentials_from_stdin() {
    const USER: &str = "reg-user";
    const PASS: &str = "reg-Pass-31415";
    let work = work_dir();
    let a = oci::build_image(&work.path().join("a"), "v1", &[12 * 1024]);
    let registry = Registry::start_with_auth(USER, PASS).await;
    let creds = format!("{USER}:{PASS}");
    Skopeo::new()
        .copy_ok(
            &a.oci_ref(),
            &format!("docker://{}/prj/a:v1", registry.host()),
            &["--dest-creds", &creds],
        )
        .await;
    let builder = Wharf::builder(&registry.url()).yaml(&base_yaml());
    let data_dir = work.path().join("data");
    let config = write_config(&builder, work.path(), &data_dir);

    // without credentials the registry answers 401: a failure that says so
    let out = wharf_cmd(&["quota", "rescan", "--config", &config], None)
        .await
        .assert_failure();
    assert!(out.stderr.contains("401"), "{out}");

    let out = wharf_cmd(
        &[
            "quota",
            "rescan",
            "--config",
            &config,
            "--username",
            USER,
            "--password-stdin",
        ],
        Some(&format!("{PASS}\n")),
    )
    .await
    .assert_success();
    assert!(out.stdout.contains("1 manifests (1 new to wharf)"), "{out}");
    assert!(!out.stdout.contains(PASS) && !out.stderr.contains(PASS));

    let wharf = builder
        .yaml(&format!("data_dir: {}\n", data_dir.display()))
        .start()
        .await;
    assert_eq!(usage(&wharf.url(), "prj").await, unique_blob_size(&[&a]));
}
