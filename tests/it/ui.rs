//! The admin UI in a real browser: Debian's `chromium`, driven by the npm package
//! `playwright-core` (pinned in `tests/ui/package-lock.json`, installed by `scripts/deps.sh`
//! into `tests/ui/node_modules`; no browser download) running `tests/ui/flows.mjs` against a
//! real registry, wharf and three webhook receivers (one answers 200, one 500, one 410).
//!
//! The script asks this test for what a browser cannot do, one line on its stdout each
//! (`@@ <command>`), and reads the answer on its stdin: push an image with skopeo, how many
//! requests a receiver got, check a receiver's last signature, change a receiver's answer.
//! The flows run twice, on the embedded store and on PostgreSQL (a private cluster). Screenshots
//! of every page of the flows (1280×800 and 390×844) are kept in
//! `tests/ui/artifacts/{sqlite,postgresql}/`.
//!
//! Besides, plain HTTP checks of what a browser does not show: the headers of every UI answer,
//! 401 with a realm, the CSRF refusals on the UI and on the existing API.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::wharf::ADMIN_PASSWORD;
use crate::common::{Receiver, Registry, Reply, Skopeo, Wharf, client, oci, tools};

const INSTALL: &str = "run `make deps` (apt-get install -y chromium nodejs npm; npm ci in tests/ui for playwright-core)";

/// The browser and the driver, or a loud failure with the install hint.
fn browser_tools() -> (PathBuf, PathBuf, PathBuf) {
    let chromium = PathBuf::from("/usr/bin/chromium");
    if !chromium.exists() {
        panic!(
            "\n\n*** /usr/bin/chromium not found: Debian's chromium is required by the UI tests ***\n*** {INSTALL} ***\n\n"
        );
    }
    let node = tools::find_on_path("node").unwrap_or_else(|| {
        panic!(
            "\n\n*** node not found on PATH: Node.js runs the UI tests ***\n*** {INSTALL} ***\n\n"
        )
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        panic!(
            "\n\n*** {} has no playwright-core: the UI tests drive Chromium with it ***\n*** {INSTALL} ***\n\n",
            dir.display()
        );
    }
    (chromium, node, dir)
}

fn htpasswd_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let mut text = String::new();
    for (u, p) in users {
        let out = std::process::Command::new(tools::htpasswd())
            .args(["-Bbn", u, p])
            .output()
            .expect("htpasswd");
        assert!(out.status.success());
        text.push_str(String::from_utf8_lossy(&out.stdout).trim());
        text.push('\n');
    }
    let path = dir.join("users.htpasswd");
    std::fs::write(&path, text).expect("writing users.htpasswd");
    path
}

/// Everything the flows run against.
struct Env {
    _registry: Registry,
    wharf: Wharf,
    ok: Receiver,
    fail: Receiver,
    gone: Receiver,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    env_with("4s", None).await
}

/// [`env`] with `backoff` between attempts, on the embedded store or (`store_url`) PostgreSQL.
async fn env_with(backoff: &str, store_url: Option<&str>) -> Env {
    let store = store_url
        .map(|u| format!("store: {{url: \"{u}\"}}\n"))
        .unwrap_or_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let users = htpasswd_file(dir.path(), &[("alice", "alice-pw-1"), ("bob", "bob-pw-1")]);
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(&format!(
            r#"
users: {{htpasswd: "{}"}}
projects:
  prj: {{admins: [alice], storage_limit: 1GiB}}
  other: {{admins: [bob]}}
notification:
  allowed_target_networks: ["127.0.0.0/8"]
  webhook_job_http_client_timeout: 2
  webhook_job_max_retry: 2
  backoff: {{initial: {backoff}, multiplier: 1.0, max: {backoff}, jitter: 0.0}}
  breaker_failures: 1000
{store}"#,
            users.display()
        ))
        .start()
        .await;
    let ok = Receiver::start().await;
    let fail = Receiver::start().await;
    fail.set_default(Reply::status(500).body("receiver failure"));
    let gone = Receiver::start().await;
    gone.set_default(Reply::status(410).body("gone"));
    Env {
        _registry: registry,
        wharf,
        ok,
        fail,
        gone,
        _dir: dir,
    }
}

/// The UI page at `path` of the wharf at `base` as the administrator sees it (200 expected).
async fn admin_page(base: &str, path: &str) -> String {
    crate::common::api::admin_get(base, path)
        .await
        .expect(200)
        .text
}

/// Push a one-layer image to `reference` (`repo:tag`) through `host` with skopeo.
async fn push_small_image(host: &str, reference: &str) {
    let work = tempfile::tempdir().unwrap();
    let tag = reference.rsplit(':').next().unwrap_or("v1");
    let img = oci::build_image(&work.path().join("img"), tag, &[512]);
    Skopeo::new()
        .copy_ok(&img.oci_ref(), &format!("docker://{host}/{reference}"), &[])
        .await;
}

/// Answer one `@@` line of the script.
async fn answer(e: &Env, skopeo: &Skopeo, work: &Path, line: &str) -> String {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let rx = |name: &str| match name {
        "ok" => &e.ok,
        "fail" => &e.fail,
        "gone" => &e.gone,
        other => panic!("flows.mjs named an unknown receiver {other:?}"),
    };
    match parts.as_slice() {
        ["push", image] => {
            let tag = image.rsplit(':').next().unwrap_or("v1");
            let layout = work.join(crate::common::unique_name("img"));
            let img = oci::build_image(&layout, tag, &[1024]);
            skopeo
                .copy_ok(
                    &img.oci_ref(),
                    &format!("docker://{}/{image}", e.wharf.host()),
                    &[],
                )
                .await;
            "ok".into()
        }
        ["count", name] => rx(name).count().to_string(),
        ["answer", name, status] => {
            let status: u16 = status.parse().expect("a status");
            rx(name).set_default(Reply::status(status));
            "ok".into()
        }
        ["verify", name, secret] => {
            let got = rx(name).requests();
            let Some(last) = got.last() else {
                return "no request".into();
            };
            let (Some(id), Some(ts), Some(sig)) = (
                last.header("webhook-id"),
                last.header("webhook-timestamp")
                    .and_then(|t| t.parse::<i64>().ok()),
                last.header("webhook-signature"),
            ) else {
                return format!("unsigned: {:?}", last.headers);
            };
            let want = wharf::dispatch::sign::sign(secret, id, ts, &last.body);
            if sig.split(' ').any(|s| s == want) {
                "ok".into()
            } else {
                format!("bad signature {sig}, expected {want}")
            }
        }
        // the content type and body of the last request whose body has `needle`
        ["body-with", name, needle] => rx(name)
            .requests()
            .iter()
            .rev()
            .find(|r| String::from_utf8_lossy(&r.body).contains(needle))
            .map(|r| {
                format!(
                    "{}|{}",
                    r.header("content-type").unwrap_or_default(),
                    String::from_utf8_lossy(&r.body).replace('\n', " ")
                )
            })
            .unwrap_or_default(),
        ["auth", name] => rx(name)
            .requests()
            .last()
            .and_then(|r| r.header("authorization").map(str::to_string))
            .unwrap_or_default(),
        _ => panic!("flows.mjs sent an unknown command: {line}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flows_in_chromium() {
    seed_flows(env().await, "sqlite").await;
}

/// The same flows with the shared store: the UI works unchanged on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flows_in_chromium_on_postgresql() {
    let url = crate::common::postgres::database().await;
    seed_flows(env_with("4s", Some(&url)).await, "postgresql").await;
}

/// Run flows.mjs against `e`; screenshots in `tests/ui/artifacts/{store}`.
async fn seed_flows(e: Env, store: &str) {
    let (chromium, node, dir) = browser_tools();
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().expect("temp dir");
    let artifacts = dir.join("artifacts").join(store);
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let mut child = tokio::process::Command::new(node)
        .arg(dir.join("flows.mjs"))
        .env("WHARF_URL", e.wharf.url())
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RX_OK", e.ok.url())
        .env("RX_FAIL", e.fail.url())
        .env("RX_GONE", e.gone.url())
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = child.stderr.take().expect("stderr");
    let err_text = Arc::new(tokio::sync::Mutex::new(String::new()));
    let err_sink = err_text.clone();
    tokio::spawn(async move {
        let mut l = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = l.next_line().await {
            eprintln!("flows.mjs: {line}");
            let mut t = err_sink.lock().await;
            t.push_str(&line);
            t.push('\n');
        }
    });
    let mut transcript = String::new();
    let run = async {
        while let Some(line) = lines.next_line().await.expect("reading flows.mjs") {
            if let Some(cmd) = line.strip_prefix("@@ ") {
                let reply = answer(&e, &skopeo, work.path(), cmd).await;
                stdin
                    .write_all(format!("{}\n", reply.replace('\n', " ")).as_bytes())
                    .await
                    .expect("answering flows.mjs");
                stdin.flush().await.expect("flush");
            } else {
                println!("{line}");
                transcript.push_str(&line);
                transcript.push('\n');
            }
        }
        child.wait().await.expect("waiting for node")
    };
    let status = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .unwrap_or_else(|_| panic!("flows.mjs did not finish within 10 minutes:\n{transcript}"));
    let err = err_text.lock().await.clone();
    assert!(
        status.success(),
        "flows.mjs failed ({status}); screenshots in {}\n--- stdout ---\n{transcript}\n--- stderr ---\n{err}",
        artifacts.display()
    );
    assert!(
        transcript.contains("all flows passed"),
        "flows.mjs ended without passing every flow:\n{transcript}"
    );
}

/// Every UI answer carries the CSP and no-store; anonymous callers are asked to sign in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_answers_are_locked_down() {
    let e = env().await;
    let base = e.wharf.url();
    let c = client();
    for path in [
        "/ui/",
        "/ui/projects/prj/webhooks",
        "/ui/settings",
        "/ui/static/ui.css",
    ] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        let h = r.headers();
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'"),
            "{path}"
        );
        assert_eq!(h["cache-control"], "no-store", "{path}");
        if path.starts_with("/ui/static") {
            assert_eq!(r.status(), 200);
        } else {
            assert_eq!(r.status(), 401, "{path}");
            assert_eq!(h["www-authenticate"], "Basic realm=\"wharf\"", "{path}");
        }
    }
    // htmx is served from the binary, with its licence
    let r = c
        .get(format!("{base}/ui/static/htmx.min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("2.0.11"));
    let r = c
        .get(format!("{base}/ui/static/htmx.LICENSE"))
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("Zero-Clause BSD"));
    // a project admin elsewhere: 403, and an admin page: 403
    for path in ["/ui/projects/other/webhooks", "/ui/settings", "/ui/events"] {
        let r = c
            .get(format!("{base}{path}"))
            .basic_auth("alice", Some("alice-pw-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .split(';')
                .next(),
            Some("default-src 'self'")
        );
    }
    // no inline script or style anywhere in a page
    let html = admin_page(&base, "/ui/projects/prj/webhooks/new").await;
    assert!(!html.contains("style="), "inline style");
    assert!(!html.contains("<script>"), "inline script");
    let handler = html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase())
            .collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert!(!handler, "an inline event handler: {html}");
    // the Payload Format choices come from PayloadFormat::HTTP
    for f in wharf::events::format::PayloadFormat::HTTP {
        assert!(
            html.contains(&format!("<option value=\"{}\"", f.name())),
            "{}",
            f.name()
        );
    }
}

/// Cross-site requests are refused on the UI and on the API; curl-like clients pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused() {
    let e = env().await;
    let base = e.wharf.url();
    let host = e.wharf.host();
    let c = client();
    let policy = json!({
        "name": "csrf", "event_types": ["PUSH_ARTIFACT"],
        "targets": [{"type": "http", "address": e.ok.url()}],
    });
    let api = format!("{base}/api/v2.0/projects/prj/webhook/policies");
    let post = |headers: &[(&str, &str)]| {
        let mut rb = c
            .post(&api)
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&policy).unwrap());
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send()
    };
    for h in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
    ] {
        let r = post(&h).await.unwrap();
        assert_eq!(r.status(), 403, "{h:?}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["code"], "FORBIDDEN", "{h:?}");
    }
    // a form post (text/plain, what a foreign page can send without a preflight): 415
    let r = c
        .post(&api)
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .header("content-type", "text/plain")
        .body(serde_json::to_vec(&policy).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // the system switch and a redeliver (no body) from another site: 403
    let r = c
        .put(format!("{base}/api/v2.0/configurations"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .header("origin", "http://evil.example")
        .json(&json!({"notification_enable": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // nothing was created
    let r = c
        .get(&api)
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!([]));
    // same origin, or no browser headers at all (curl): accepted
    let origin = format!("http://{host}");
    let r = post(&[("origin", &origin), ("sec-fetch-site", "same-origin")])
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = c
        .post(format!("{api}/{id}/redeliver"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(format!("{api}/{id}/redeliver"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // reading from another site is not refused (the browser's same-origin policy hides it)
    let r = c
        .get(&api)
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // the UI: a form post from another site changes nothing
    for h in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "http://evil.example"),
    ] {
        let r = c
            .post(format!("{base}/ui/settings"))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .header(h.0, h.1)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("submitted=1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{h:?}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("cross-site request refused")
        );
    }
    let on = c
        .get(format!("{base}/api/v2.0/configurations"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(on["notification_enable"]["value"], true);
    // the UI's own form post (same origin) works
    let r = c
        .post(format!("{base}/ui/projects/prj/webhooks/{id}/deactivate"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .header("origin", &origin)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/projects/prj/webhooks");
    let p = c
        .get(format!("{api}/{id}"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(p["enabled"], false);
}

/// The API pieces the UI needs, used without the UI: one execution, its payload, an attempt's
/// request and response with secrets as `set`, the test of a stored policy with a chosen event
/// type, redelivery of what failed since a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_additions_for_the_ui() {
    let e = env_with("100ms", None).await;
    let base = e.wharf.url();
    let c = client();
    let api = format!("{base}/api/v2.0/projects/prj/webhook/policies");
    let get = |path: String| c.get(path).basic_auth("alice", Some("alice-pw-1")).send();
    let post = |path: String, body: Option<serde_json::Value>| {
        let mut rb = c.post(path).basic_auth("alice", Some("alice-pw-1"));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb.send()
    };
    let created = post(
        api.clone(),
        Some(json!({
            "name": "signed", "event_types": ["PUSH_ARTIFACT", "PULL_ARTIFACT"],
            "targets": [{"type": "http", "address": e.ok.url(), "auth_header": "Bearer t0p", "secret": "s3cret-key"}],
        })),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    push_small_image(&e.wharf.host(), "prj/app:v1").await;
    let got = e.ok.wait_for(1, Duration::from_secs(20)).await;
    let sent = got[0].body.clone();
    let list: serde_json::Value = get(format!("{api}/{id}/executions"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let eid = list[0]["id"].as_i64().unwrap();
    // one execution, as the list shows it
    let one: serde_json::Value =
        crate::common::wait_until("Success", Duration::from_secs(20), || async {
            let v: serde_json::Value = get(format!("{api}/{id}/executions/{eid}"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (v["status"] == "Success").then_some(v)
        })
        .await;
    assert_eq!(one["id"], eid);
    assert_eq!(one["extra_attrs"]["event_type"], "PUSH_ARTIFACT");
    assert_eq!(
        get(format!("{api}/{id}/executions/999999"))
            .await
            .unwrap()
            .status(),
        404
    );
    // its payload: the bytes the receiver got
    let r = get(format!("{api}/{id}/executions/{eid}/payload"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.bytes().await.unwrap(), sent);
    // an attempt: the request sent (secrets as "set") and the response
    let tasks: serde_json::Value = get(format!("{api}/{id}/executions/{eid}/tasks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tid = tasks[0]["id"].as_i64().unwrap();
    let r = get(format!("{api}/{id}/executions/{eid}/tasks/{tid}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("t0p") && !text.contains("s3cret-key"),
        "{text}"
    );
    let t: serde_json::Value = serde_json::from_str(&text).unwrap();
    let headers = t["request"]["headers"].as_array().unwrap();
    let header = |n: &str| {
        headers
            .iter()
            .find(|h| h["name"] == n)
            .map(|h| h["value"].clone())
    };
    assert_eq!(header("Authorization"), Some(json!("set")));
    assert_eq!(header("webhook-signature"), Some(json!("set")));
    assert_eq!(
        header("webhook-id").unwrap(),
        json!(got[0].header("webhook-id").unwrap())
    );
    assert_eq!(t["request"]["url"], e.ok.url());
    assert_eq!(t["request"]["body"].as_str().unwrap().as_bytes(), &sent[..]);
    assert_eq!(t["response"]["status_code"], 200);
    // the stored policy's test, with a chosen type, its stored auth header and secret
    let r = post(
        format!("{api}/{id}/test"),
        Some(json!({"event_type": "PULL_ARTIFACT"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let last = e.ok.requests().last().cloned().unwrap();
    assert_eq!(last.json()["type"], "PULL_ARTIFACT");
    assert_eq!(last.header("authorization"), Some("Bearer t0p"));
    let sig = wharf::dispatch::sign::sign(
        "s3cret-key",
        last.header("webhook-id").unwrap(),
        last.header("webhook-timestamp").unwrap().parse().unwrap(),
        &last.body,
    );
    assert_eq!(last.header("webhook-signature"), Some(sig.as_str()));
    let r = post(format!("{api}/{id}/test"), None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        e.ok.requests().last().unwrap().json()["type"],
        "PUSH_ARTIFACT"
    );
    for bad in [
        json!({"event_type": "NOPE"}),
        json!({"type": "PUSH_ARTIFACT"}),
    ] {
        let r = post(format!("{api}/{id}/test"), Some(bad.clone()))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // bob administers another project: 403
    let r = c
        .post(format!("{api}/{id}/test"))
        .basic_auth("bob", Some("bob-pw-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // redeliver what failed since a time
    let created = post(
        api.clone(),
        Some(json!({"name": "failing", "event_types": ["PUSH_ARTIFACT"], "targets": [{"type": "http", "address": e.fail.url()}]})),
    )
    .await
    .unwrap();
    let fid = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    push_small_image(&e.wharf.host(), "prj/app:v2").await;
    crate::common::wait_until("a dead delivery", Duration::from_secs(20), || async {
        let v: serde_json::Value = get(format!("{api}/{fid}/executions?status=Error"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v.as_array().is_some_and(|a| !a.is_empty())).then_some(())
    })
    .await;
    let r = post(format!("{api}/{fid}/redeliver?since=yesterday"), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let r = post(
        format!(
            "{api}/{fid}/redeliver?since={}",
            url::form_urlencoded::byte_serialize(future.as_bytes()).collect::<String>()
        ),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"redelivered": 0})
    );
    e.fail.set_default(Reply::status(200));
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let r = post(
        format!(
            "{api}/{fid}/redeliver?since={}",
            url::form_urlencoded::byte_serialize(past.as_bytes()).collect::<String>()
        ),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"redelivered": 1})
    );
    crate::common::wait_until("the redelivery", Duration::from_secs(20), || async {
        let v: serde_json::Value = get(format!("{api}/{fid}/executions?status=Success"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v.as_array().is_some_and(|a| !a.is_empty())).then_some(())
    })
    .await;
}

/// Regression: the UI called the API with a project's name but without
/// `X-Is-Resource-Name: true`, so an all-digit project name was taken for a project id: the
/// page of project `2` showed the policies of the project whose id is 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_with_an_all_digit_name_is_shown_by_its_name() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml("projects: {\"2\": {}, a: {}, prj: {}}\nnotification: {allowed_target_networks: [\"127.0.0.0/8\"]}\n")
        .start()
        .await;
    let base = wharf.url();
    let c = client();
    let id_of = |name: &str| {
        c.get(format!("{base}/api/v2.0/projects/{name}"))
            .header("X-Is-Resource-Name", "true")
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
    };
    let two = id_of("2").await.unwrap();
    assert_eq!(two.status(), 200);
    let two = two.json::<serde_json::Value>().await.unwrap()["project_id"]
        .as_i64()
        .unwrap();
    assert_ne!(two, 2, "the case needs project \"2\" not to have id 2");
    for name in ["2", "a", "prj"] {
        let r = c
            .post(format!("{base}/api/v2.0/projects/{name}/webhook/policies"))
            .header("X-Is-Resource-Name", "true")
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .json(&json!({
                "name": format!("policy-of-{name}"), "event_types": ["PUSH_ARTIFACT"],
                "targets": [{"type": "http", "address": "http://127.0.0.1:9/"}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{name}");
    }
    let html = admin_page(&base, "/ui/projects/2/webhooks").await;
    assert!(html.contains("policy-of-2"), "{html}");
    assert!(
        !html.contains("policy-of-a") && !html.contains("policy-of-prj"),
        "{html}"
    );
    // Regression: an execution page's "Log" link named the project, without the header the
    // UI's own calls send, so it asked the project whose id is 2 and got a 404.
    push_small_image(&wharf.host(), "2/app:v1").await;
    let api = |path: String| {
        c.get(format!("{base}/api/v2.0/projects/2/webhook/policies{path}"))
            .header("X-Is-Resource-Name", "true")
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
    };
    let policies: serde_json::Value = api(String::new()).await.unwrap().json().await.unwrap();
    let id = policies[0]["id"].as_i64().unwrap();
    let eid = crate::common::wait_until("an attempt", Duration::from_secs(20), || async {
        let ex: serde_json::Value = api(format!("/{id}/executions"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let eid = ex[0]["id"].as_i64()?;
        let tasks: serde_json::Value = api(format!("/{id}/executions/{eid}/tasks"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (tasks.as_array().is_some_and(|t| !t.is_empty())).then_some(eid)
    })
    .await;
    let html = admin_page(
        &base,
        &format!("/ui/projects/2/webhooks/{id}/executions/{eid}"),
    )
    .await;
    let log = html
        .split("href=\"")
        .filter_map(|h| h.split('"').next())
        .find(|h| h.ends_with("/log"))
        .unwrap_or_else(|| panic!("no Log link: {html}"));
    let r = crate::common::api::admin_get(&base, log).await;
    assert_eq!(r.status, 200, "{log}: {}", r.text);
}
