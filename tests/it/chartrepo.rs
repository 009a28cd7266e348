//! Classic Helm chart repositories through wharf: Harbor's `/chartrepo/<p>/…` and
//! `/api/chartrepo/<p>/…` paths in front of ChartMuseum (`--depth=1`), and the UPLOAD_CHART,
//! DOWNLOAD_CHART and DELETE_CHART events they make, delivered to a real receiver.
//!
//! ChartMuseum itself is the in-process FAKE of [`crate::common::chartmuseum`] (no ChartMuseum
//! build is installable here); charts are real `helm package` archives, and downloads are made
//! by a real `helm` (`helm repo add` / `repo update` / `pull`). Chart paths never reach the
//! registry, so wharf's registry upstream is a closed port.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::chartmuseum::ChartMuseum;
use crate::common::wharf::ADMIN_PASSWORD;
use crate::common::{ChartKind, Helm, Receiver, Recorded, Wharf, client, closed_port};

/// How long deliveries of expected events may take.
const SOON: Duration = Duration::from_secs(10);
/// How long "nothing (more) arrives" is watched for.
const QUIET: Duration = Duration::from_millis(800);

const BOUNDARY: &str = "wharf-it-boundary-7MA4YWxkTrZu0gW";

/// A fake ChartMuseum, a wharf in front of it (loopback webhook targets allowed), and a
/// receiver subscribed to project `prj`'s chart events in the Default (`/default`) and Legacy
/// (`/legacy`) formats.
struct Env {
    cm: ChartMuseum,
    wharf: Wharf,
    rx: Receiver,
    helm: Helm,
}

async fn env(extra: &str) -> Env {
    env_with(ChartMuseum::start().await, extra).await
}

async fn env_with(cm: ChartMuseum, extra: &str) -> Env {
    let wharf = wharf_for(&format!("\"{}\"", cm.url()), extra).await;
    let rx = subscribe(&wharf).await;
    Env {
        cm,
        wharf,
        rx,
        helm: Helm::new(),
    }
}

/// A receiver subscribed, through the policy API, to project `prj`'s chart events in the Default
/// (`/default`) and Legacy (`/legacy`) formats.
async fn subscribe(wharf: &Wharf) -> Receiver {
    let rx = Receiver::start().await;
    let resp = client()
        .post(format!(
            "{}/api/v2.0/projects/prj/webhook/policies",
            wharf.url()
        ))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .json(&json!({
            "name": "charts",
            "enabled": true,
            "event_types": ["UPLOAD_CHART", "DOWNLOAD_CHART", "DELETE_CHART"],
            "targets": [
                {"type": "http", "address": format!("{}/default", rx.url()), "payload_format": "Default"},
                {"type": "http", "address": format!("{}/legacy", rx.url()), "payload_format": "Legacy"},
            ],
        }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(status, 201, "policy: {}", resp.text().await.unwrap());
    rx
}

/// A wharf whose `upstream.chartmuseum` is `chartmuseum` (YAML; `null` for none).
async fn wharf_for(chartmuseum: &str, extra: &str) -> Wharf {
    let registry = format!("http://127.0.0.1:{}", closed_port());
    Wharf::builder(&registry)
        .yaml(&format!("upstream:\n  chartmuseum: {chartmuseum}\n"))
        .yaml("notification:\n  allowed_target_networks: [\"127.0.0.0/8\"]\n")
        .yaml(extra)
        .start()
        .await
}

/// A `multipart/form-data` body with file parts `(field, filename, content)`.
fn multipart(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, filename, content) in parts {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// A response: status and body.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

async fn send(rb: reqwest::RequestBuilder) -> Answer {
    let resp = rb.send().await.expect("request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.bytes().await.expect("body").to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

/// `POST <base><path>` with a raw chart body, as user `alice`.
async fn post_raw(base: &str, path: &str, body: &[u8]) -> Answer {
    send(
        client()
            .post(format!("{base}{path}"))
            .basic_auth("alice", Some("pw"))
            .header("content-type", "application/octet-stream")
            .body(body.to_vec()),
    )
    .await
}

/// `POST <base><path>` with a multipart body, as user `alice`.
async fn post_form(base: &str, path: &str, body: &[u8]) -> Answer {
    send(
        client()
            .post(format!("{base}{path}"))
            .basic_auth("alice", Some("pw"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body.to_vec()),
    )
    .await
}

async fn get(url: &str) -> Answer {
    send(client().get(url)).await
}

/// Wait for exactly `n` events (2 `n` deliveries: Default and Legacy), then return the payloads
/// of `/default` and of `/legacy`, in arrival order.
async fn expect_events(rx: &Receiver, n: usize) -> (Vec<Value>, Vec<Value>) {
    rx.wait_for(2 * n, SOON).await;
    rx.expect_no_more_than(2 * n, QUIET).await;
    let got = rx.requests();
    let of = |p: &str| -> Vec<Value> {
        got.iter()
            .filter(|r: &&Recorded| r.path == p)
            .map(Recorded::json)
            .collect()
    };
    let (d, l) = (of("/default"), of("/legacy"));
    assert_eq!(d.len(), n, "Default deliveries: {d:#?}");
    assert_eq!(l.len(), n, "Legacy deliveries: {l:#?}");
    (d, l)
}

/// The Default payload of type `kind` about chart `name`.
fn default_of<'a>(list: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = list
        .iter()
        .filter(|v| v["type"] == kind && v["event_data"]["resources"][0]["chart_name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{kind} of {name}: {list:#?}");
    found[0]
}

fn legacy_of<'a>(list: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = list
        .iter()
        .filter(|v| v["event_type"] == kind && v["events"][0]["chart_name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{kind} of {name}: {list:#?}");
    &found[0]["events"][0]
}

/// Check a Default chart payload: the seed's fields and Harbor's chartrepo resource URL.
#[allow(clippy::too_many_arguments)]
fn check_default(
    v: &Value,
    host: &str,
    name: &str,
    version: &str,
    chart_type: &str,
    size: u64,
    operator: &str,
) {
    assert!(v["occur_at"].as_i64().unwrap() > 1_700_000_000, "{v}");
    assert_eq!(v["operator"], operator, "{v}");
    let r = &v["event_data"]["resources"][0];
    assert_eq!(r["tag"], version, "{v}");
    assert_eq!(r["chart_name"], name, "{v}");
    assert_eq!(r["chart_version"], version, "{v}");
    assert_eq!(r["chart_type"], chart_type, "{v}");
    assert_eq!(r["size"], size, "{v}");
    assert_eq!(
        r["resource_url"],
        format!("{host}/chartrepo/prj/charts/{name}-{version}.tgz"),
        "{v}"
    );
    let repo = &v["event_data"]["repository"];
    assert_eq!(repo["name"], name, "{v}");
    assert_eq!(repo["namespace"], "prj", "{v}");
    assert_eq!(repo["repo_full_name"], format!("prj/{name}"), "{v}");
    assert_eq!(repo["repo_type"], "private", "{v}");
}

/// Check a Legacy chart event (one element of `events`).
fn check_legacy(ev: &Value, host: &str, name: &str, version: &str, chart_type: &str, size: u64) {
    assert_eq!(ev["project"], "prj", "{ev}");
    assert_eq!(ev["repo_name"], name, "{ev}");
    assert_eq!(ev["full_name"], format!("prj/{name}"), "{ev}");
    assert_eq!(ev["tag"], version, "{ev}");
    assert_eq!(ev["chart_name"], name, "{ev}");
    assert_eq!(ev["chart_version"], version, "{ev}");
    assert_eq!(ev["chart_type"], chart_type, "{ev}");
    assert_eq!(ev["chart_size"], size, "{ev}");
    assert_eq!(ev["size"], size, "{ev}");
    assert_eq!(ev["project_type"], "Private", "{ev}");
    assert!(ev["trigger_time"].as_i64().unwrap() > 1_700_000_000, "{ev}");
    assert_eq!(
        ev["resource_url"],
        format!("{host}/chartrepo/prj/charts/{name}-{version}.tgz"),
        "{ev}"
    );
}

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A gzip-compressed tar of `(path, content)` files (for archives helm would not make).
fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// `helm repo add wr http://<wharf>/chartrepo/prj`, `helm repo update wr`.
async fn add_repo(helm: &Helm, wharf: &Wharf) {
    let url = format!("{}/chartrepo/prj", wharf.url());
    helm.run_ok(&["repo", "add", "wr", &url]).await;
    helm.run_ok(&["repo", "update", "wr"]).await;
}

/// `helm pull wr/<name> --version V -d <fresh dir>`; returns the file.
async fn helm_pull(helm: &Helm, name: &str, version: &str) -> std::path::PathBuf {
    let dest = tempfile::Builder::new()
        .prefix("pull-")
        .tempdir_in(helm.dir())
        .unwrap()
        .keep();
    helm.run_ok(&[
        "pull",
        &format!("wr/{name}"),
        "--version",
        version,
        "-d",
        dest.to_str().unwrap(),
    ])
    .await;
    let f = dest.join(format!("{name}-{version}.tgz"));
    assert!(f.is_file(), "helm pull did not write {}", f.display());
    f
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_and_raw_uploads_make_one_upload_chart_event_each() {
    let e = env("").await;
    let host = e.wharf.host();
    let app = read(
        &e.helm
            .package("web-app", "1.2.3", ChartKind::Application)
            .await,
    );
    let lib = read(
        &e.helm
            .package("mylib", "0.1.0-rc.1", ChartKind::Library)
            .await,
    );

    // multipart, field `chart`
    let form = multipart(&[("chart", "web-app-1.2.3.tgz", &app[..])]);
    let a = post_form(&e.wharf.url(), "/api/chartrepo/prj/charts", &form).await;
    assert_eq!((a.status, a.json()), (201, json!({"saved": true})));
    // ChartMuseum got the very bytes the client sent, at its depth=1 path
    let last = e.cm.requests().pop().unwrap();
    assert_eq!(last.path, "/api/prj/charts");
    assert_eq!(&last.body[..], &form[..]);
    assert_eq!(
        e.cm.file("prj", "web-app-1.2.3.tgz").as_deref(),
        Some(&app[..])
    );

    // a raw archive body
    let a = post_raw(&e.wharf.url(), "/api/chartrepo/prj/charts", &lib).await;
    assert_eq!((a.status, a.json()), (201, json!({"saved": true})));
    assert_eq!(
        e.cm.file("prj", "mylib-0.1.0-rc.1.tgz").as_deref(),
        Some(&lib[..])
    );

    // the same versions again: ChartMuseum's 409s, passed through, and no event
    let a = post_raw(&e.wharf.url(), "/api/chartrepo/prj/charts", &app).await;
    assert_eq!(
        (a.status, a.json()),
        (409, json!({"error": "file already exists"}))
    );
    let a = post_form(&e.wharf.url(), "/api/chartrepo/prj/charts", &form).await;
    assert_eq!(
        (a.status, a.json()),
        (409, json!({"error": "chart already exists"}))
    );

    let (d, l) = expect_events(&e.rx, 2).await;
    let v = default_of(&d, "UPLOAD_CHART", "web-app");
    check_default(
        v,
        &host,
        "web-app",
        "1.2.3",
        "application",
        app.len() as u64,
        "alice",
    );
    assert_eq!(v["event_data"]["resources"][0]["app_version"], "1.0");
    let v = default_of(&d, "UPLOAD_CHART", "mylib");
    check_default(
        v,
        &host,
        "mylib",
        "0.1.0-rc.1",
        "library",
        lib.len() as u64,
        "alice",
    );
    let ev = legacy_of(&l, "uploadChart", "web-app");
    check_legacy(
        ev,
        &host,
        "web-app",
        "1.2.3",
        "application",
        app.len() as u64,
    );
    assert_eq!(ev["operator"], "alice");
    let ev = legacy_of(&l, "uploadChart", "mylib");
    check_legacy(
        ev,
        &host,
        "mylib",
        "0.1.0-rc.1",
        "library",
        lib.len() as u64,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_repo_add_and_pull_through_wharf_make_one_download_event() {
    let e = env("").await;
    let host = e.wharf.host();
    let hello_path = e
        .helm
        .package("hello", "0.3.0", ChartKind::Application)
        .await;
    let hello = read(&hello_path);
    let direct = read(
        &e.helm
            .package("direct-lib", "2.0.0", ChartKind::Library)
            .await,
    );

    let a = post_raw(&e.wharf.url(), "/api/chartrepo/prj/charts", &hello).await;
    assert_eq!(a.status, 201);
    // a chart wharf never saw uploaded: its type comes from ChartMuseum's API
    let a = post_raw(&e.cm.url(), "/api/prj/charts", &direct).await;
    assert_eq!(a.status, 201);

    add_repo(&e.helm, &e.wharf).await;
    let pulled = helm_pull(&e.helm, "hello", "0.3.0").await;
    assert_eq!(
        read(&pulled),
        hello,
        "pulled chart differs from the uploaded one"
    );
    let pulled = helm_pull(&e.helm, "direct-lib", "2.0.0").await;
    assert_eq!(read(&pulled), direct);

    // helm read the index through wharf, and the index points back at wharf
    let index_reads =
        e.cm.requests()
            .iter()
            .filter(|r| r.path == "/prj/index.yaml")
            .count();
    assert!(index_reads >= 1, "{:?}", e.cm.requests());
    let idx = get(&format!("{}/chartrepo/prj/index.yaml", e.wharf.url())).await;
    assert_eq!(idx.status, 200);
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&idx.body).unwrap();
    assert_eq!(
        doc["entries"]["hello"][0]["urls"][0].as_str(),
        Some("charts/hello-0.3.0.tgz")
    );

    // a provenance file: uploaded and downloaded through wharf, no event
    let prov = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\napiVersion: v2\nname: hello\nversion: 0.3.0\n...\n";
    let a = post_raw(&e.wharf.url(), "/api/chartrepo/prj/prov", prov).await;
    assert_eq!((a.status, a.json()), (201, json!({"saved": true})));
    let a = get(&format!(
        "{}/chartrepo/prj/charts/hello-0.3.0.tgz.prov",
        e.wharf.url()
    ))
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], &prov[..]);
    assert_eq!(a.content_type, "application/pgp-signature");

    // upload of hello, download of hello, download of direct-lib: nothing for index or prov
    let (d, l) = expect_events(&e.rx, 3).await;
    default_of(&d, "UPLOAD_CHART", "hello");
    let v = default_of(&d, "DOWNLOAD_CHART", "hello");
    check_default(
        v,
        &host,
        "hello",
        "0.3.0",
        "application",
        hello.len() as u64,
        "anonymous",
    );
    assert!(
        v["event_data"]["custom_attributes"]["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.starts_with("Helm/")),
        "{v}"
    );
    // direct-lib's download: what ChartMuseum says of it (uploaded behind wharf's back)
    let direct_lib = |v: &Value| {
        check_default(
            v,
            &host,
            "direct-lib",
            "2.0.0",
            "library",
            direct.len() as u64,
            "anonymous",
        );
        assert_eq!(v["event_data"]["resources"][0]["app_version"], "1.0");
    };
    direct_lib(default_of(&d, "DOWNLOAD_CHART", "direct-lib"));
    let ev = legacy_of(&l, "downloadChart", "hello");
    check_legacy(
        ev,
        &host,
        "hello",
        "0.3.0",
        "application",
        hello.len() as u64,
    );

    // what ChartMuseum said of direct-lib was remembered with its download event: the next
    // download makes the same event without asking ChartMuseum again
    let asked = || {
        e.cm.requests()
            .iter()
            .filter(|r| r.path == "/api/prj/charts/direct-lib/2.0.0")
            .count()
    };
    assert_eq!(asked(), 1);
    helm_pull(&e.helm, "direct-lib", "2.0.0").await;
    let (d, _) = expect_events(&e.rx, 4).await;
    let again: Vec<&Value> = d
        .iter()
        .filter(|v| {
            v["type"] == "DOWNLOAD_CHART"
                && v["event_data"]["resources"][0]["chart_name"] == "direct-lib"
        })
        .collect();
    assert_eq!(again.len(), 2);
    direct_lib(again[1]);
    assert_eq!(asked(), 1, "{:?}", e.cm.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_makes_one_delete_chart_event_with_type_and_size() {
    let e = env("").await;
    let host = e.wharf.host();
    let lib = read(
        &e.helm
            .package("gone-lib", "1.0.0", ChartKind::Library)
            .await,
    );
    let other = read(
        &e.helm
            .package("unseen", "0.0.1", ChartKind::Application)
            .await,
    );
    let form = multipart(&[("chart", "gone-lib-1.0.0.tgz", &lib[..])]);
    assert_eq!(
        post_form(&e.wharf.url(), "/api/chartrepo/prj/charts", &form)
            .await
            .status,
        201
    );
    // uploaded behind wharf's back: type from ChartMuseum's API, size from the archive
    assert_eq!(
        post_raw(&e.cm.url(), "/api/prj/charts", &other)
            .await
            .status,
        201
    );

    let del = |path: &str| {
        client()
            .delete(format!("{}{path}", e.wharf.url()))
            .basic_auth("bob", Some("pw"))
    };
    let a = send(del("/api/chartrepo/prj/charts/gone-lib/1.0.0")).await;
    assert_eq!((a.status, a.json()), (200, json!({"deleted": true})));
    assert_eq!(e.cm.file("prj", "gone-lib-1.0.0.tgz"), None);
    let a = send(del("/api/chartrepo/prj/charts/unseen/0.0.1")).await;
    assert_eq!((a.status, a.json()), (200, json!({"deleted": true})));

    // gone: ChartMuseum's 404s pass through, no event
    let a = send(del("/api/chartrepo/prj/charts/gone-lib/1.0.0")).await;
    assert_eq!(
        (a.status, a.json()),
        (
            404,
            json!({"error": "remove prj/gone-lib-1.0.0.tgz: no such file or directory"})
        )
    );
    let a = get(&format!(
        "{}/chartrepo/prj/charts/gone-lib-1.0.0.tgz",
        e.wharf.url()
    ))
    .await;
    assert_eq!(
        (a.status, a.json()),
        (404, json!({"error": "object not found"}))
    );

    let (d, l) = expect_events(&e.rx, 3).await;
    default_of(&d, "UPLOAD_CHART", "gone-lib");
    let v = default_of(&d, "DELETE_CHART", "gone-lib");
    check_default(
        v,
        &host,
        "gone-lib",
        "1.0.0",
        "library",
        lib.len() as u64,
        "bob",
    );
    let v = default_of(&d, "DELETE_CHART", "unseen");
    check_default(
        v,
        &host,
        "unseen",
        "0.0.1",
        "application",
        other.len() as u64,
        "bob",
    );
    assert_eq!(v["event_data"]["resources"][0]["app_version"], "1.0");
    let ev = legacy_of(&l, "deleteChart", "gone-lib");
    check_legacy(ev, &host, "gone-lib", "1.0.0", "library", lib.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_uploads_get_chartmuseums_answer_and_no_event() {
    let e = env("").await;
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let no_chart_yaml = tgz(&[
        ("web/values.yaml", b"a: 1\n"),
        ("web/templates/x.yaml", b"kind: ConfigMap\n"),
    ]);
    let mut truncated = read(&e.helm.package("cut", "1.0.0", ChartKind::Application).await);
    truncated.truncate(truncated.len() / 2);

    for (what, body) in [
        ("random bytes", &random),
        ("a tgz without Chart.yaml", &no_chart_yaml),
        ("a truncated chart", &truncated),
    ] {
        // raw: ChartMuseum answers 500 for a body it cannot open
        let via = post_raw(&e.wharf.url(), "/api/chartrepo/prj/charts", body).await;
        let direct = post_raw(&e.cm.url(), "/api/prj/charts", body).await;
        assert_eq!(via, direct, "raw {what}");
        assert_eq!(via.status, 500, "raw {what}: {via:?}");
        assert!(via.json()["error"].is_string());
        // multipart: 400
        let form = multipart(&[("chart", "x.tgz", &body[..])]);
        let via = post_form(&e.wharf.url(), "/api/chartrepo/prj/charts", &form).await;
        let direct = post_form(&e.cm.url(), "/api/prj/charts", &form).await;
        assert_eq!(via, direct, "multipart {what}");
        assert_eq!(via.status, 400, "multipart {what}: {via:?}");
    }
    // a form without a chart (nor prov) field
    let form = multipart(&[("file", "x.tgz", &no_chart_yaml[..])]);
    let via = post_form(&e.wharf.url(), "/api/chartrepo/prj/charts", &form).await;
    assert_eq!(
        (via.status, via.json()),
        (
            400,
            json!({"error": "no package or provenance file found in form fields chart and prov"})
        )
    );
    e.rx.expect_no_more_than(0, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_cap_is_streamed_through_without_an_event() {
    let e = env("chartrepo:\n  max_upload_size: 100B\n").await;
    let app = read(&e.helm.package("big", "1.0.0", ChartKind::Application).await);
    assert!(app.len() > 100);
    let a = post_raw(&e.wharf.url(), "/api/chartrepo/prj/charts", &app).await;
    assert_eq!((a.status, a.json()), (201, json!({"saved": true})));
    assert_eq!(e.cm.file("prj", "big-1.0.0.tgz").as_deref(), Some(&app[..]));
    e.rx.expect_no_more_than(0, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_chart_urls_in_the_index_are_rewritten_to_wharf() {
    // ChartMuseum run with --chart-url: absolute URLs naming a host helm cannot reach
    let cm = ChartMuseum::builder()
        .chart_url("http://chartmuseum.invalid:8080")
        .start()
        .await;
    let e = env_with(cm, "").await;
    let chart = read(&e.helm.package("abs", "1.0.0", ChartKind::Application).await);
    assert_eq!(
        post_raw(&e.wharf.url(), "/api/chartrepo/prj/charts", &chart)
            .await
            .status,
        201
    );
    let direct = get(&format!("{}/prj/index.yaml", e.cm.url())).await;
    assert!(
        String::from_utf8_lossy(&direct.body)
            .contains("http://chartmuseum.invalid:8080/prj/charts/abs-1.0.0.tgz")
    );
    let idx = get(&format!("{}/chartrepo/prj/index.yaml", e.wharf.url())).await;
    assert_eq!(idx.status, 200);
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&idx.body).unwrap();
    let url = format!("{}/chartrepo/prj/charts/abs-1.0.0.tgz", e.wharf.url());
    assert_eq!(
        doc["entries"]["abs"][0]["urls"][0].as_str(),
        Some(url.as_str())
    );
    assert_eq!(doc["apiVersion"].as_str(), Some("v1"));

    // so helm downloads through wharf (the named host does not even resolve)
    add_repo(&e.helm, &e.wharf).await;
    let pulled = helm_pull(&e.helm, "abs", "1.0.0").await;
    assert_eq!(read(&pulled), chart);
    let (d, _) = expect_events(&e.rx, 2).await;
    default_of(&d, "DOWNLOAD_CHART", "abs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_api_listings_pass_through() {
    let e = env("").await;
    for v in ["1.0.0", "1.1.0"] {
        let c = read(&e.helm.package("listed", v, ChartKind::Application).await);
        assert_eq!(
            post_raw(&e.cm.url(), "/api/prj/charts", &c).await.status,
            201
        );
    }
    for path in [
        "/charts",
        "/charts/listed",
        "/charts/listed/1.1.0",
        "/charts/listed/latest",
        "/charts/nope",
        "/charts/listed/9.9.9",
    ] {
        let via = get(&format!("{}/api/chartrepo/prj{path}", e.wharf.url())).await;
        let direct = get(&format!("{}/api/prj{path}", e.cm.url())).await;
        assert_eq!(via, direct, "{path}");
    }
    let all = get(&format!("{}/api/chartrepo/prj/charts", e.wharf.url()))
        .await
        .json();
    assert_eq!(all["listed"].as_array().unwrap().len(), 2, "{all}");
    let one = get(&format!(
        "{}/api/chartrepo/prj/charts/listed/1.1.0",
        e.wharf.url()
    ))
    .await
    .json();
    assert_eq!(one["type"], "application");
    assert_eq!(one["urls"][0], "charts/listed-1.1.0.tgz");
    let head =
        send(client().head(format!("{}/api/chartrepo/prj/charts/listed", e.wharf.url()))).await;
    assert_eq!(head.status, 200);

    // readiness probes ChartMuseum's /health
    let ready = get(&format!("{}/readyz", e.wharf.url())).await.json();
    assert_eq!(
        ready["upstreams"]["chartmuseum"],
        json!({"reachable": true, "status": 200}),
        "{ready}"
    );
    assert!(e.cm.requests().iter().any(|r| r.path == "/health"));
    e.rx.expect_no_more_than(0, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chartmuseum_down_is_a_502_with_json_and_no_event() {
    let wharf = wharf_for(&format!("\"http://127.0.0.1:{}\"", closed_port()), "").await;
    let rx = subscribe(&wharf).await;
    let helm = Helm::new();
    let chart = read(&helm.package("down", "1.0.0", ChartKind::Application).await);
    for a in [
        get(&format!("{}/chartrepo/prj/index.yaml", wharf.url())).await,
        get(&format!(
            "{}/chartrepo/prj/charts/down-1.0.0.tgz",
            wharf.url()
        ))
        .await,
        post_raw(&wharf.url(), "/api/chartrepo/prj/charts", &chart).await,
        send(client().delete(format!(
            "{}/api/chartrepo/prj/charts/down/1.0.0",
            wharf.url()
        )))
        .await,
    ] {
        assert_eq!(a.status, 502, "{a:?}");
        assert!(a.content_type.starts_with("application/json"), "{a:?}");
        let v = a.json();
        assert_eq!(v["errors"][0]["code"], "UNAVAILABLE", "{v}");
        assert_eq!(v["errors"][0]["detail"]["upstream"], "chartmuseum", "{v}");
    }
    let ready = send(client().get(format!("{}/readyz", wharf.url()))).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["upstreams"]["chartmuseum"]["reachable"], false);
    rx.expect_no_more_than(0, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_paths_without_chartmuseum_or_off_the_map_are_404_json() {
    let wharf = wharf_for("null", "").await;
    let a = get(&format!("{}/chartrepo/prj/index.yaml", wharf.url())).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["errors"][0]["code"], "NOT_FOUND");

    let cm = ChartMuseum::start().await;
    let wharf = wharf_for(&format!("\"{}\"", cm.url()), "").await;
    for (method, path) in [
        (
            reqwest::Method::GET,
            "/chartrepo/prj/charts/..%2F..%2Fhealth",
        ),
        (reqwest::Method::GET, "/chartrepo/prj/charts/%2e%2e"),
        (reqwest::Method::GET, "/chartrepo/PRJ/index.yaml"),
        (reqwest::Method::DELETE, "/api/chartrepo/prj/charts/x"),
        (reqwest::Method::PUT, "/chartrepo/prj/index.yaml"),
    ] {
        let a = send(client().request(method.clone(), format!("{}{path}", wharf.url()))).await;
        assert_eq!(a.status, 404, "{method} {path}: {a:?}");
        assert_eq!(a.json()["errors"][0]["code"], "NOT_FOUND", "{path}");
    }
    assert!(
        cm.requests().is_empty(),
        "refused paths reached chartmuseum: {:?}",
        cm.requests()
    );
}
