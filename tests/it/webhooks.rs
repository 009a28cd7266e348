//! Webhooks end to end: the policy API (Harbor's shapes), pushes through wharf into the real
//! registry, deliveries to a real HTTP receiver in every payload format, retries, timeouts,
//! `Retry-After`, 410 Gone, dead deliveries and redelivery, switches and filters, signatures,
//! the SSRF guard and the test endpoint, masked secrets, project roles, crash durability of the
//! outbox (the real binary killed with SIGKILL), metrics, and isolation of a dead target.
//!
//! Every test has its own registry, wharf and receiver(s). Retries are made fast with
//! [`FAST`]: tiny backoff, a 1 s attempt timeout, loopback targets allowed.

use std::collections::{BTreeSet, HashSet};

use crate::common::api::ApiResp as Resp;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::oci::{self, OciImage};
use crate::common::wharf::ADMIN_PASSWORD;
use crate::common::{
    Receiver, Recorded, Registry, RegistryClient, Reply, Skopeo, Wharf, WharfBuilder, client,
    closed_port, tools, wait_until,
};

/// Loopback targets allowed, a 1 s attempt timeout, 100 ms between attempts, no breaker.
const FAST: &str = r#"
notification:
  allowed_target_networks: ["127.0.0.0/8"]
  webhook_job_http_client_timeout: 1
  backoff: {initial: 100ms, multiplier: 1.0, max: 100ms, jitter: 0.0}
  breaker_failures: 1000
  slack_interval: 10ms
"#;

/// How long "nothing (more) arrives" is watched for: deliveries start within milliseconds.
const QUIET: Duration = Duration::from_millis(800);

/// Generous upper bound for something that should happen at once.
const SOON: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// helpers

/// wharf's API as one user.
#[derive(Clone)]
struct Api {
    base: String,
    c: reqwest::Client,
    user: String,
    pass: String,
}

impl Api {
    fn admin(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            c: client(),
            user: "admin".into(),
            pass: ADMIN_PASSWORD.into(),
        }
    }

    fn as_user(&self, user: &str, pass: &str) -> Api {
        Api {
            user: user.into(),
            pass: pass.into(),
            ..self.clone()
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Resp {
        let mut rb = self
            .c
            .request(method.clone(), format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.pass))
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        Resp::read(r).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: &Value) -> Resp {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: &Value) -> Resp {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> Resp {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Every verb on policy `id` of `project` (read, change, delete, its executions, redeliver)
    /// answers `status`.
    async fn expect_on_policy(&self, project: &str, id: i64, body: &Value, status: u16) {
        let one = format!("{}/{id}", policies(project));
        self.get(&one).await.expect(status);
        self.put(&one, body).await.expect(status);
        self.delete(&one).await.expect(status);
        self.get(&format!("{one}/executions")).await.expect(status);
        self.post(&format!("{one}/redeliver"), &json!({}))
            .await
            .expect(status);
    }

    /// Create a policy in `project`; asserts 201 and returns the policy as answered.
    async fn create_policy(&self, project: &str, body: &Value) -> Value {
        self.post(&policies(project), body).await.expect(201).json()
    }

    /// Deliveries (Harbor executions) of a policy, newest first.
    async fn executions(&self, project: &str, id: i64) -> Vec<Value> {
        let v = self
            .get(&format!(
                "{}/{id}/executions?page_size=100",
                policies(project)
            ))
            .await
            .expect(200)
            .json();
        v.as_array().expect("executions array").clone()
    }

    /// Attempts (Harbor tasks) of one delivery, oldest first.
    async fn tasks(&self, project: &str, id: i64, eid: i64) -> Vec<Value> {
        let v = self
            .get(&format!(
                "{}/{id}/executions/{eid}/tasks",
                policies(project)
            ))
            .await
            .expect(200)
            .json();
        v.as_array().expect("tasks array").clone()
    }

    /// Wait until the policy has `n` executions, all with a final status; returns them.
    async fn wait_executions_done(&self, project: &str, id: i64, n: usize) -> Vec<Value> {
        wait_until(
            &format!("{n} finished executions of policy {id}"),
            SOON,
            || async {
                let ex = self.executions(project, id).await;
                let done = ex
                    .iter()
                    .filter(|e| matches!(e["status"].as_str(), Some("Success" | "Error")))
                    .count();
                (ex.len() == n && done == n).then_some(ex)
            },
        )
        .await
    }
}

fn policies(project: &str) -> String {
    format!("/api/v2.0/projects/{project}/webhook/policies")
}

/// A policy body for PUSH_ARTIFACT events.
fn policy(name: &str, targets: Vec<Value>) -> Value {
    json!({
        "name": name,
        "description": format!("{name} policy"),
        "enabled": true,
        "event_types": ["PUSH_ARTIFACT"],
        "targets": targets,
    })
}

/// An http target with the Default format.
fn target(address: &str) -> Value {
    json!({"type": "http", "address": address, "skip_cert_verify": true})
}

/// Pushes a small image through wharf with plain `/v2` calls: blobs once per repository, then
/// the manifest under each tag (one PUSH_ARTIFACT event per tag).
struct Pusher {
    rc: RegistryClient,
    image: OciImage,
    manifest: Vec<u8>,
    seeded: Mutex<HashSet<String>>,
    _dir: tempfile::TempDir,
}

impl Pusher {
    fn new(base: &str) -> Pusher {
        let dir = tempfile::Builder::new()
            .prefix("wharf-it-webhooks-")
            .tempdir()
            .unwrap();
        let image = oci::build_image(&dir.path().join("img"), "src", &[2048]);
        let manifest = std::fs::read(image.blob_path(&image.digest)).unwrap();
        Pusher {
            rc: RegistryClient::new(base),
            image,
            manifest,
            seeded: Mutex::new(HashSet::new()),
            _dir: dir,
        }
    }

    /// Push `repo:tag`; returns the manifest digest once wharf answered 201.
    async fn push(&self, repo: &str, tag: &str) -> String {
        let fresh = self.seeded.lock().unwrap().insert(repo.to_string());
        if fresh {
            for b in self.image.layer_and_config_blobs() {
                let data = std::fs::read(self.image.blob_path(&b.digest)).unwrap();
                self.rc.upload_blob(repo, data).await;
            }
        }
        self.rc
            .put_manifest(repo, tag, oci::MANIFEST_V1, self.manifest.clone())
            .await
    }
}

/// A registry, an in-process wharf in front of it (with [`FAST`] and `extra`), an admin API
/// client and a pusher.
struct Env {
    _registry: Registry,
    wharf: Wharf,
    api: Api,
    pusher: Pusher,
}

async fn env(extra: &str) -> Env {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(FAST)
        .yaml(extra)
        .start()
        .await;
    let api = Api::admin(&wharf.url());
    let pusher = Pusher::new(&wharf.url());
    Env {
        _registry: registry,
        wharf,
        api,
        pusher,
    }
}

/// The `tag` of the first resource of a Default payload.
fn tag_of(r: &Recorded) -> String {
    r.json()["event_data"]["resources"][0]["tag"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn webhook_id(r: &Recorded) -> String {
    r.header("webhook-id")
        .unwrap_or_else(|| panic!("no webhook-id header: {:?}", r.headers))
        .to_string()
}

/// A `whsec_` secret of 32 random bytes, and those bytes.
fn new_secret() -> (String, Vec<u8>) {
    let key: [u8; 32] = rand::random();
    (
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
        key.to_vec(),
    )
}

/// The Standard Webhooks signature of `body`, computed independently of wharf's `sign`
/// module: HMAC-SHA256 with `key` over `"{id}.{timestamp}.{body}"`, base64, prefixed `v1,`.
fn expected_signature(key: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Does one of the space-separated signatures of `header` match?
fn signature_matches(header: &str, expected: &str) -> bool {
    header.split(' ').any(|s| s == expected)
}

/// The request carries a fresh `webhook-timestamp` and a `webhook-signature` that verifies.
#[track_caller]
fn assert_signed(r: &Recorded, key: &[u8]) {
    let id = webhook_id(r);
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let ts_n: i64 = ts.parse().expect("numeric webhook-timestamp");
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - ts_n).abs() < 120,
        "webhook-timestamp {ts} is not now ({now})"
    );
    let expected = expected_signature(key, &id, ts, &r.body);
    let header = r.header("webhook-signature").expect("webhook-signature");
    assert!(
        signature_matches(header, &expected),
        "webhook-signature {header:?} does not verify (expected {expected})"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. the policy API

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_api_crud_validation_and_harbor_shapes() {
    let e = env("").await;
    let rx = Receiver::start().await;
    let api = &e.api;

    // create: 201, Location, Harbor's shape
    let body = policy("hook", vec![target(&rx.url())]);
    let r = api.post(&policies("prj"), &body).await.expect(201);
    let created = r.json();
    let id = created["id"].as_i64().expect("id");
    assert_eq!(
        r.header("location"),
        Some(format!("{}/{id}", policies("prj")).as_str())
    );
    assert_eq!(created["name"], "hook");
    assert_eq!(created["description"], "hook policy");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["event_types"], json!(["PUSH_ARTIFACT"]));
    assert_eq!(created["creator"], "admin");
    let project_id = created["project_id"].as_i64().expect("project_id");
    assert!(project_id > 0, "{created}");
    for k in ["creation_time", "update_time"] {
        let t = created[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k}: {created}"));
        chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{k} {t}: {e}"));
    }
    let t0 = &created["targets"][0];
    assert_eq!(t0["type"], "http");
    assert_eq!(t0["address"], rx.url());
    assert_eq!(t0["payload_format"], "Default");
    assert_eq!(t0["skip_cert_verify"], true);
    assert_eq!(t0["disabled"], false);

    // list and get
    let r = api.get(&policies("prj")).await.expect(200);
    assert_eq!(r.header("x-total-count"), Some("1"));
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0], created);
    let got = api
        .get(&format!("{}/{id}", policies("prj")))
        .await
        .expect(200)
        .json();
    assert_eq!(got, created);

    // the project by its numeric id
    let by_id = api
        .get(&policies(&project_id.to_string()))
        .await
        .expect(200)
        .json();
    assert_eq!(by_id[0]["id"], id);
    api.get(&format!("{}/{id}", policies(&project_id.to_string())))
        .await
        .expect(200);
    api.get(&policies("999999")).await.expect(404);

    // update
    let mut changed = policy("hook-renamed", vec![target(&format!("{}/v2", rx.url()))]);
    changed["event_types"] = json!(["PUSH_ARTIFACT", "DELETE_ARTIFACT"]);
    changed["description"] = json!("changed");
    let updated = api
        .put(&format!("{}/{id}", policies("prj")), &changed)
        .await
        .expect(200)
        .json();
    assert_eq!(updated["name"], "hook-renamed");
    assert_eq!(updated["description"], "changed");
    assert_eq!(
        updated["event_types"],
        json!(["PUSH_ARTIFACT", "DELETE_ARTIFACT"])
    );
    assert_eq!(updated["targets"][0]["address"], format!("{}/v2", rx.url()));
    assert_eq!(updated["id"], id);
    assert_eq!(updated["creation_time"], created["creation_time"]);

    // validation: 400 naming the field
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"event_types": ["PUSH_ARTIFACT"], "targets": [target(&rx.url())]}),
            "name",
        ),
        (
            json!({"name": "x", "event_types": ["PUSH_IMAGE"], "targets": [target(&rx.url())]}),
            "event_types[0]",
        ),
        (
            json!({"name": "x", "event_types": [], "targets": [target(&rx.url())]}),
            "event_types",
        ),
        (
            json!({"name": "x", "event_types": ["PUSH_ARTIFACT"], "targets": [target("not a url")]}),
            "targets[0].address",
        ),
        (
            json!({"name": "x", "event_types": ["PUSH_ARTIFACT"], "targets": [target("ftp://127.0.0.1/")]}),
            "targets[0].address",
        ),
        (
            json!({"name": "x", "event_types": ["PUSH_ARTIFACT"], "targets": [
                target(&rx.url()),
                {"type": "http", "address": rx.url(), "payload_format": "Yaml"},
            ]}),
            "targets[1].payload_format",
        ),
        (
            json!({"name": "x", "event_types": ["PUSH_ARTIFACT"], "targets": [
                {"type": "http", "address": rx.url(), "payload_format": "Slack"},
            ]}),
            "targets[0].payload_format",
        ),
        (
            json!({"name": "x", "event_types": ["PUSH_ARTIFACT"], "targets": [
                {"type": "email", "address": rx.url()},
            ]}),
            "targets[0].type",
        ),
        (
            json!({"name": "x", "event_types": ["PUSH_ARTIFACT"], "targets": []}),
            "targets",
        ),
    ];
    for (body, field) in &cases {
        let r = api.post(&policies("prj"), body).await.expect(400);
        let msg = r.error_message();
        assert!(
            msg.starts_with(&format!("{field}:")),
            "{body}: message {msg:?} does not name {field}"
        );
        assert_eq!(r.json()["errors"][0]["code"], "BAD_REQUEST");
    }
    let r = api
        .call(reqwest::Method::POST, &policies("prj"), None)
        .await
        .expect(400);
    assert!(r.error_message().starts_with("body:"), "{}", r.text);
    // the same validation on update
    let r = api
        .put(
            &format!("{}/{id}", policies("prj")),
            &json!({"name": "hook-renamed", "event_types": ["NOPE"], "targets": [target(&rx.url())]}),
        )
        .await
        .expect(400);
    assert!(r.error_message().starts_with("event_types[0]:"));

    // duplicate names: 409 on create and on rename
    let r = api
        .post(
            &policies("prj"),
            &policy("hook-renamed", vec![target(&rx.url())]),
        )
        .await
        .expect(409);
    assert!(r.error_message().starts_with("name:"), "{}", r.text);
    let other = api
        .create_policy("prj", &policy("other", vec![target(&rx.url())]))
        .await;
    let other_id = other["id"].as_i64().unwrap();
    api.put(
        &format!("{}/{other_id}", policies("prj")),
        &policy("hook-renamed", vec![target(&rx.url())]),
    )
    .await
    .expect(409);
    // the same name in another project is fine
    api.create_policy("other", &policy("hook-renamed", vec![target(&rx.url())]))
        .await;

    // supported events
    let ev = api
        .get("/api/v2.0/projects/prj/webhook/events")
        .await
        .expect(200)
        .json();
    let types: Vec<&str> = ev["event_type"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // exactly Harbor's answer (wharf's chart types and formats are accepted all the same)
    assert_eq!(
        types,
        [
            "PUSH_ARTIFACT",
            "PULL_ARTIFACT",
            "DELETE_ARTIFACT",
            "QUOTA_EXCEED",
            "QUOTA_WARNING",
            "SCANNING_FAILED",
            "SCANNING_STOPPED",
            "SCANNING_COMPLETED",
            "REPLICATION",
            "TAG_RETENTION",
        ]
    );
    assert_eq!(ev["notify_type"], json!(["http", "slack"]));
    assert_eq!(
        ev["payload_formats"],
        json!([{"notify_type": "http", "formats": ["Default", "CloudEvents"]}]),
        "{ev}"
    );

    // last trigger: null before an event, a time after one
    let lt = api
        .get("/api/v2.0/projects/prj/webhook/lasttrigger")
        .await
        .expect(200)
        .json();
    let row = |lt: &Value, et: &str| -> Value {
        lt.as_array()
            .unwrap()
            .iter()
            .find(|r| r["policy_id"] == id && r["event_type"] == et)
            .cloned()
            .unwrap_or_else(|| panic!("no lasttrigger row for {et}: {lt}"))
    };
    let before = row(&lt, "PUSH_ARTIFACT");
    assert_eq!(before["policy_name"], "hook-renamed");
    assert_eq!(before["enabled"], true);
    assert!(before["creation_time"].is_string());
    assert_eq!(
        before["last_trigger_time"], "0001-01-01T00:00:00.000Z",
        "{before}"
    );
    let pushed_at = chrono::Utc::now() - chrono::Duration::seconds(1);
    e.pusher.push("prj/app", "v1").await;
    rx.wait_for(1, SOON).await;
    let lt = api
        .get("/api/v2.0/projects/prj/webhook/lasttrigger")
        .await
        .expect(200)
        .json();
    let after = row(&lt, "PUSH_ARTIFACT");
    let t =
        chrono::DateTime::parse_from_rfc3339(after["last_trigger_time"].as_str().unwrap()).unwrap();
    assert!(t >= pushed_at, "{after}");
    assert_eq!(
        row(&lt, "DELETE_ARTIFACT")["last_trigger_time"],
        "0001-01-01T00:00:00.000Z"
    );

    // delete: 200, then 404 everywhere
    api.delete(&format!("{}/{id}", policies("prj")))
        .await
        .expect(200);
    api.get(&format!("{}/{id}", policies("prj")))
        .await
        .expect(404);
    api.delete(&format!("{}/{id}", policies("prj")))
        .await
        .expect(404);
    api.put(
        &format!("{}/{id}", policies("prj")),
        &policy("again", vec![target(&rx.url())]),
    )
    .await
    .expect(404);
    let r = api.get(&policies("prj")).await.expect(200);
    assert_eq!(r.header("x-total-count"), Some("1"));
    // a policy of another project is not found under this one
    let foreign = api.get(&policies("other")).await.expect(200).json()[0]["id"]
        .as_i64()
        .unwrap();
    api.get(&format!("{}/{foreign}", policies("prj")))
        .await
        .expect(404);
    // no credentials: 401
    let r = client()
        .get(format!("{}{}", e.wharf.url(), policies("prj")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
}

// ---------------------------------------------------------------------------------------------
// 2. one push → one request per target, in each format

/// An address without a scheme is `http://` (Harbor's reading): accepted, given back as it
/// was written, and delivered over http. Before, wharf refused it with a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_address_without_a_scheme_is_http() {
    let e = env("").await;
    let rx = Receiver::start().await;
    let address = format!("{}/bare", rx.url().trim_start_matches("http://"));
    let created = e
        .api
        .create_policy("prj", &policy("bare", vec![target(&address)]))
        .await;
    assert_eq!(created["targets"][0]["address"], address);
    e.pusher.push("prj/app", "v1").await;
    let got = rx.wait_for(1, SOON).await;
    assert_eq!(got[0].path, "/bare");
    rx.expect_no_more_than(1, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_delivers_one_request_per_target_in_each_payload_format() {
    let e = env("").await;
    let rx = Receiver::start().await;
    let url = rx.url();
    let created = e
        .api
        .create_policy(
            "prj",
            &policy(
                "formats",
                vec![
                    target(&format!("{url}/default")),
                    json!({"type": "http", "address": format!("{url}/cloudevents"), "payload_format": "CloudEvents"}),
                    json!({"type": "http", "address": format!("{url}/legacy"), "payload_format": "Legacy"}),
                    json!({"type": "slack", "address": format!("{url}/slack")}),
                ],
            ),
        )
        .await;
    let policy_id = created["id"].as_i64().unwrap();
    let project_id = created["project_id"].as_i64().unwrap();
    // Harbor leaves a slack target's format out
    assert!(created["targets"][3].get("payload_format").is_none());

    // a real client: skopeo copies an OCI layout through wharf
    let work = tempfile::tempdir().unwrap();
    let image = oci::build_image(&work.path().join("src"), "v1", &[4096]);
    let skopeo = Skopeo::new();
    skopeo
        .copy_ok(
            &image.oci_ref(),
            &format!("docker://{}/prj/app:v1", e.wharf.host()),
            &[],
        )
        .await;

    rx.wait_for(4, SOON).await;
    rx.expect_no_more_than(4, QUIET).await;
    let got = rx.requests();
    let by_path = |p: &str| -> Recorded {
        let v: Vec<&Recorded> = got.iter().filter(|r| r.path == p).collect();
        assert_eq!(v.len(), 1, "requests to {p}: {}", v.len());
        v[0].clone()
    };
    for r in &got {
        assert_eq!(r.method, "POST");
    }
    let id = webhook_id(&got[0]);
    assert!(
        got.iter().all(|r| webhook_id(r) == id),
        "every target gets the same event id"
    );

    // Default
    let d = by_path("/default");
    assert_eq!(d.header("content-type"), Some("application/json"));
    let v = d.json();
    assert_eq!(v["type"], "PUSH_ARTIFACT");
    assert!(v["occur_at"].as_i64().unwrap() > 1_700_000_000);
    assert!(v["operator"].is_string());
    let res = &v["event_data"]["resources"][0];
    assert_eq!(res["tag"], "v1");
    assert_eq!(res["digest"], image.digest);
    assert_eq!(
        res["resource_url"],
        format!("{}/prj/app:v1", e.wharf.host())
    );
    assert_eq!(res["image_name"], "prj/app:v1");
    assert_eq!(res["media_type"], oci::MANIFEST_V1);
    let repo = &v["event_data"]["repository"];
    assert_eq!(repo["name"], "app");
    assert_eq!(repo["namespace"], "prj");
    assert_eq!(repo["repo_full_name"], "prj/app");
    assert_eq!(repo["repo_type"], "private");
    assert_eq!(v["event_data"]["custom_attributes"]["event_id"], id);
    assert!(
        v["event_data"]["custom_attributes"]["user_agent"]
            .as_str()
            .unwrap_or_default()
            .contains("skopeo"),
        "{v}"
    );

    // CloudEvents
    let c = by_path("/cloudevents");
    assert_eq!(
        c.header("content-type"),
        Some("application/cloudevents+json")
    );
    let v = c.json();
    assert_eq!(v["specversion"], "1.0");
    assert_ne!(v["id"], id, "a CloudEvents id of its own per delivery");
    assert_eq!(
        v["eventid"], id,
        "wharf's event id in the extension eventid"
    );
    assert_eq!(v["type"], "harbor.artifact.pushed");
    assert_eq!(
        v["source"],
        format!("/projects/{project_id}/webhook/policies/{policy_id}")
    );
    assert_eq!(v["datacontenttype"], "application/json");
    assert_eq!(v["data"]["resources"][0]["tag"], "v1");
    chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).unwrap();

    // Legacy
    let l = by_path("/legacy");
    assert_eq!(l.header("content-type"), Some("application/json"));
    let v = l.json();
    assert_eq!(v["event_type"], "pushImage");
    let ev = &v["events"][0];
    assert_eq!(ev["project"], "prj");
    assert_eq!(ev["repo_name"], "app");
    assert_eq!(ev["tag"], "v1");
    assert_eq!(ev["full_name"], "prj/app");
    assert_eq!(ev["project_type"], "Private");
    assert_eq!(
        ev["image_id"],
        image.digest.trim_start_matches("sha256:"),
        "{v}"
    );
    assert!(ev["trigger_time"].as_i64().is_some());

    // Slack: Harbor's message, six mrkdwn sections
    let s = by_path("/slack");
    assert_eq!(s.header("content-type"), Some("application/json"));
    let v = s.json();
    let blocks = v["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), 6, "{v}");
    assert!(blocks.iter().all(|b| b["type"] == "section"));
    assert_eq!(blocks[0]["text"]["text"], "*Harbor webhook events*");
    assert_eq!(blocks[1]["text"]["text"], "*event_type:* PUSH_ARTIFACT");
    assert!(s.text().contains(&image.digest));

    // four executions, one per target, all successful
    let ex = e.api.wait_executions_done("prj", policy_id, 4).await;
    assert!(ex.iter().all(|x| x["status"] == "Success"), "{ex:?}");
    assert!(ex.iter().all(|x| x["extra_attrs"]["event_id"] == id));
}

// ---------------------------------------------------------------------------------------------
// 3. retries, timeouts, Retry-After, 410, dead and redelivery

/// Regression: a target answering a NUL byte made the PostgreSQL outcome write fail (`text`
/// and JSON refuse `\u0000`), so the delivery stayed claimed and was sent again at every lease,
/// with every outcome of its batch. The excerpt is kept with U+FFFD instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_answering_a_nul_byte_is_recorded_once_on_postgresql() {
    let url = crate::common::postgres::database().await;
    let e = env(&format!("store: {{url: \"{url}\", claim_lease: 6s}}\n")).await;
    let rx = Receiver::start().await;
    rx.push_all([Reply::status(200).body(&b"ok\0"[..])]);
    let p = e
        .api
        .create_policy("prj", &policy("nul", vec![target(&rx.url())]))
        .await;
    let pid = p["id"].as_i64().unwrap();
    e.pusher.push("prj/app", "v1").await;
    rx.wait_for(1, SOON).await;
    let ex = e.api.wait_executions_done("prj", pid, 1).await;
    assert_eq!(ex[0]["status"], "Success", "{}", ex[0]);
    let eid = ex[0]["id"].as_i64().unwrap();
    let tasks = e.api.tasks("prj", pid, eid).await;
    assert_eq!(tasks[0]["extra_attrs"]["response_excerpt"], "ok\u{fffd}");
    rx.expect_no_more_than(1, QUIET).await;
}

/// A receiver, and a policy of `prj` that sends it every event as Slack messages.
async fn slack_receiver(e: &Env) -> Receiver {
    let rx = Receiver::start().await;
    e.api
        .create_policy(
            "prj",
            &policy(
                "paced",
                vec![json!({"type": "slack", "address": format!("{}/slack", rx.url())})],
            ),
        )
        .await;
    rx
}

/// Slack's pace: one message per `slack_interval` to a target (the case of a turn that comes
/// after the claim's lease is a unit test of `dispatch::targets`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_messages_to_one_target_are_paced() {
    let e = env("notification: {slack_interval: 2s}\n").await;
    let rx = slack_receiver(&e).await;
    e.pusher.push("prj/app", "v1").await;
    e.pusher.push("prj/app", "v2").await;
    let got = rx.wait_for(2, SOON).await;
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(1900), "paced: {gap:?}");
    assert_ne!(got[0].body, got[1].body, "two events, one message each");
    rx.expect_no_more_than(2, QUIET).await;
}

/// Regression: a graceful shutdown closed the store while attempts were in flight, so their
/// outcomes were lost and the next start sent them again. Shutdown now waits for them (within
/// `shutdown_grace`) and records them before the store closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_records_the_attempts_in_flight() {
    let e = env("").await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::delay(Duration::from_millis(700), Reply::status(200)));
    e.api
        .create_policy("prj", &policy("slow", vec![target(&rx.url())]))
        .await;
    e.pusher.push("prj/app", "v1").await;
    rx.wait_for(1, SOON).await;
    let Env { wharf, .. } = e;
    let data = wharf.shutdown_keeping_data().await;
    let store = wharf::store::Store::open_sqlite(data.path(), Default::default()).unwrap();
    let states = store
        .read(|c| {
            let mut v = Vec::new();
            for id in 1..=3 {
                if let Some(s) = c.text(
                    "SELECT state FROM deliveries WHERE id = ?1",
                    &[wharf::store::db::Value::Int(id)],
                )? {
                    v.push(s);
                }
            }
            Ok(v)
        })
        .await
        .unwrap();
    assert_eq!(states, ["succeeded"]);
    store.close().await;
}

/// Regression: a Slack message waiting for its pace did not watch shutdown: the process sent
/// it while stopping (or, with a pace longer than `shutdown_grace`, left it running, to be sent
/// again after restart). Stopping ends the wait at once and the delivery goes back to pending,
/// unattempted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_does_not_send_a_slack_message_waiting_for_its_pace() {
    let e = env("notification: {slack_interval: 8s}\n").await;
    let rx = slack_receiver(&e).await;
    e.pusher.push("prj/app", "v1").await;
    rx.wait_for(1, SOON).await;
    e.pusher.push("prj/app", "v2").await;
    // the second message is claimed, and waits for its pace
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Env { wharf, .. } = e;
    let started = std::time::Instant::now();
    let data = wharf.shutdown_keeping_data().await;
    let took = started.elapsed();
    assert_eq!(rx.count(), 1, "no message sent while stopping");
    assert!(took < Duration::from_secs(5), "stopped at once: {took:?}");
    let store = wharf::store::Store::open_sqlite(data.path(), Default::default()).unwrap();
    let states = store
        .read(|c| {
            let mut v = Vec::new();
            for id in 1..=2 {
                v.push(c.text(
                    "SELECT state || ' ' || attempts FROM deliveries WHERE id = ?1",
                    &[wharf::store::db::Value::Int(id)],
                )?);
            }
            Ok(v)
        })
        .await
        .unwrap();
    assert_eq!(
        states,
        [
            Some("succeeded 1".to_string()),
            Some("pending 0".to_string())
        ]
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_retried_with_the_same_webhook_id_and_listed_as_tasks() {
    let e = env("notification: {webhook_job_max_retry: 3}").await;
    let rx = Receiver::start().await;
    rx.push_all([
        Reply::status(500).body("boom"),
        Reply::status(500),
        Reply::status(200),
    ]);
    let p = e
        .api
        .create_policy("prj", &policy("retry", vec![target(&rx.url())]))
        .await;
    let pid = p["id"].as_i64().unwrap();
    e.pusher.push("prj/app", "v1").await;

    let got = rx.wait_for(3, SOON).await;
    rx.expect_no_more_than(3, QUIET).await;
    let id = webhook_id(&got[0]);
    assert!(got.iter().all(|r| webhook_id(r) == id), "same webhook-id");
    assert!(got.iter().all(|r| r.body == got[0].body), "same payload");

    let ex = e.api.wait_executions_done("prj", pid, 1).await;
    assert_eq!(ex[0]["status"], "Success", "{}", ex[0]);
    assert_eq!(ex[0]["vendor_type"], "WEBHOOK");
    assert_eq!(ex[0]["vendor_id"], pid);
    assert_eq!(ex[0]["extra_attrs"]["attempts"], 3);
    assert_eq!(ex[0]["extra_attrs"]["event_id"], id);
    let eid = ex[0]["id"].as_i64().unwrap();
    let tasks = e.api.tasks("prj", pid, eid).await;
    // newest first, as Harbor
    let codes: Vec<Value> = tasks
        .iter()
        .map(|t| t["extra_attrs"]["status_code"].clone())
        .collect();
    assert_eq!(codes, [json!(200), json!(500), json!(500)], "{tasks:?}");
    let statuses: Vec<&str> = tasks
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["Success", "Error", "Error"]);
    assert_eq!(tasks[2]["execution_id"], eid);
    assert_eq!(tasks[2]["extra_attrs"]["response_excerpt"], "boom");
    // one attempt as text
    let tid = tasks[2]["id"].as_i64().unwrap();
    let log = e
        .api
        .get(&format!(
            "{}/{pid}/executions/{eid}/tasks/{tid}/log",
            policies("prj")
        ))
        .await
        .expect(200);
    assert!(log.text.contains("status 500"), "{}", log.text);
    assert!(log.text.contains(&id), "{}", log.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_count_as_failures_and_are_retried() {
    let e = env("notification: {webhook_job_max_retry: 3}").await;
    let rx = Receiver::start().await;
    rx.push(Reply::delay(
        Duration::from_millis(2500),
        Reply::status(200),
    ));
    rx.push(Reply::close());
    let p = e
        .api
        .create_policy("prj", &policy("slow", vec![target(&rx.url())]))
        .await;
    let pid = p["id"].as_i64().unwrap();
    e.pusher.push("prj/app", "v1").await;

    let got = rx.wait_for(3, SOON).await;
    rx.expect_no_more_than(3, QUIET).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(900) && gap < Duration::from_millis(2400),
        "the retry came {gap:?} after the first attempt (timeout 1 s)"
    );
    assert!(got.iter().all(|r| webhook_id(r) == webhook_id(&got[0])));
    let ex = e.api.wait_executions_done("prj", pid, 1).await;
    assert_eq!(ex[0]["status"], "Success");
    let mut tasks = e.api.tasks("prj", pid, ex[0]["id"].as_i64().unwrap()).await;
    tasks.reverse(); // oldest first
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    assert_eq!(tasks[0]["status"], "Error");
    assert_eq!(tasks[0]["extra_attrs"]["error_kind"], "timeout");
    assert!(tasks[0]["extra_attrs"]["status_code"].is_null());
    // a connection closed without an answer is a failure too
    assert_eq!(tasks[1]["status"], "Error");
    assert!(
        tasks[1]["extra_attrs"]["status_code"].is_null(),
        "{tasks:?}"
    );
    assert_eq!(tasks[2]["extra_attrs"]["status_code"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_failures_and_never_followed() {
    let e = env("notification: {webhook_job_max_retry: 1}").await;
    let rx = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    rx.set_default(Reply::status(307).header("Location", &format!("{}/x", elsewhere.url())));
    let pid = e
        .api
        .create_policy("prj", &policy("redirect", vec![target(&rx.url())]))
        .await["id"]
        .as_i64()
        .unwrap();
    e.pusher.push("prj/app", "v1").await;
    rx.wait_for(2, SOON).await;
    let ex = e.api.wait_executions_done("prj", pid, 1).await;
    assert_eq!(ex[0]["status"], "Error");
    assert_eq!(ex[0]["extra_attrs"]["last_status_code"], 307);
    assert_eq!(elsewhere.count(), 0, "the redirect was followed");
}

/// A retry is attempted at its due time (backoff 100 ms), not at the dispatcher's next idle
/// poll (a second): the dispatcher looks up the next due time after a retry it scheduled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_attempted_when_due_not_at_the_next_idle_poll() {
    let e = env("notification: {webhook_job_max_retry: 3}").await;
    let rx = Receiver::start().await;
    rx.push(Reply::status(500));
    rx.push(Reply::status(500));
    e.api
        .create_policy("prj", &policy("due", vec![target(&rx.url())]))
        .await;
    e.pusher.push("prj/app", "v1").await;
    let got = rx.wait_for(3, SOON).await;
    for (i, pair) in got.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(90) && gap < Duration::from_millis(600),
            "retry {} came {gap:?} after the attempt before it (backoff 100 ms)",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let e = env("notification: {webhook_job_max_retry: 3}").await;
    let rx = Receiver::start().await;
    rx.push(Reply::retry_after(503, "2"));
    rx.push(Reply::retry_after(429, "1"));
    e.api
        .create_policy("prj", &policy("ra", vec![target(&rx.url())]))
        .await;
    e.pusher.push("prj/app", "v1").await;
    let got = rx.wait_for(3, SOON).await;
    let first = got[1].at - got[0].at;
    let second = got[2].at - got[1].at;
    assert!(
        first >= Duration::from_millis(1900),
        "Retry-After: 2 but the retry came after {first:?}"
    );
    assert!(first < Duration::from_millis(3500), "{first:?}");
    assert!(
        second >= Duration::from_millis(900),
        "Retry-After: 1 but the retry came after {second:?}"
    );
    rx.expect_no_more_than(3, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_target_and_later_events_skip_it() {
    let e = env("notification: {webhook_job_max_retry: 3}").await;
    let gone = Receiver::start().await;
    let ok = Receiver::start().await;
    gone.set_default(Reply::status(410));
    let p = e
        .api
        .create_policy(
            "prj",
            &policy("gone", vec![target(&gone.url()), target(&ok.url())]),
        )
        .await;
    let pid = p["id"].as_i64().unwrap();
    e.pusher.push("prj/app", "v1").await;
    gone.wait_for(1, SOON).await;
    ok.wait_for(1, SOON).await;

    let ex = e.api.wait_executions_done("prj", pid, 2).await;
    let dead = ex
        .iter()
        .find(|x| x["extra_attrs"]["target_address"] == gone.url())
        .unwrap();
    assert_eq!(dead["status"], "Error", "{dead}");
    assert_eq!(dead["extra_attrs"]["attempts"], 1, "410 is not retried");
    assert_eq!(dead["extra_attrs"]["last_status_code"], 410);
    let got = e
        .api
        .get(&format!("{}/{pid}", policies("prj")))
        .await
        .expect(200)
        .json();
    assert_eq!(got["targets"][0]["disabled"], true, "{got}");
    assert_eq!(got["targets"][1]["disabled"], false, "{got}");

    e.pusher.push("prj/app", "v2").await;
    let later = ok.wait_for(2, SOON).await;
    assert_eq!(tag_of(&later[1]), "v2");
    gone.expect_no_more_than(1, QUIET).await;
    assert_eq!(e.api.executions("prj", pid).await.len(), 3);

    // redelivery does not go to a disabled target either …
    let eid = dead["id"].as_i64().unwrap();
    let redeliver_one = format!("{}/{pid}/executions/{eid}/redeliver", policies("prj"));
    let r = e.api.post(&redeliver_one, &json!({})).await.expect(409);
    assert!(r.error_message().contains("disabled"), "{}", r.text);
    let r = e
        .api
        .post(&format!("{}/{pid}/redeliver", policies("prj")), &json!({}))
        .await
        .expect(200);
    assert_eq!(r.json()["redelivered"], 0);
    gone.expect_no_more_than(1, QUIET).await;

    // … until a PUT re-enables it
    gone.set_default(Reply::status(200));
    let mut again = got.clone();
    again["targets"][0]["disabled"] = json!(false);
    let r = e
        .api
        .put(&format!("{}/{pid}", policies("prj")), &again)
        .await
        .expect(200);
    assert_eq!(r.json()["targets"][0]["disabled"], false);
    e.api.post(&redeliver_one, &json!({})).await.expect(200);
    let back = gone.wait_for(2, SOON).await;
    assert_eq!(tag_of(&back[1]), "v1");
    e.pusher.push("prj/app", "v3").await;
    let back = gone.wait_for(3, SOON).await;
    assert_eq!(tag_of(&back[2]), "v3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_are_dead_and_redeliverable() {
    let e = env("notification: {webhook_job_max_retry: 1}").await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(500));
    let p = e
        .api
        .create_policy("prj", &policy("dead", vec![target(&rx.url())]))
        .await;
    let pid = p["id"].as_i64().unwrap();
    e.pusher.push("prj/app", "v1").await;
    let got = rx.wait_for(2, SOON).await;
    rx.expect_no_more_than(2, QUIET).await;
    let id1 = webhook_id(&got[0]);
    let ex = e.api.wait_executions_done("prj", pid, 1).await;
    assert_eq!(ex[0]["status"], "Error", "{}", ex[0]);
    assert_eq!(ex[0]["extra_attrs"]["state"], "dead");
    assert_eq!(ex[0]["extra_attrs"]["attempts"], 2);
    assert!(ex[0]["end_time"].is_string());
    let eid = ex[0]["id"].as_i64().unwrap();
    let dead_only = e
        .api
        .get(&format!(
            "{}/{pid}/executions?status=Error",
            policies("prj")
        ))
        .await
        .expect(200);
    assert_eq!(dead_only.header("x-total-count"), Some("1"));

    // redeliver that one: sent again with the same id
    rx.set_default(Reply::status(200));
    let r = e
        .api
        .post(
            &format!("{}/{pid}/executions/{eid}/redeliver", policies("prj")),
            &json!({}),
        )
        .await
        .expect(200);
    assert_eq!(r.json()["redelivered"], 1);
    let got = rx.wait_for(3, SOON).await;
    assert_eq!(webhook_id(&got[2]), id1);
    let ex = e.api.wait_executions_done("prj", pid, 1).await;
    assert_eq!(ex[0]["status"], "Success");
    // an unknown execution: 404
    e.api
        .post(
            &format!("{}/{pid}/executions/999999/redeliver", policies("prj")),
            &json!({}),
        )
        .await
        .expect(404);

    // two more dead ones, then redeliver every dead delivery of the policy
    rx.set_default(Reply::status(500));
    e.pusher.push("prj/app", "v2").await;
    e.pusher.push("prj/app", "v3").await;
    rx.wait_for(7, SOON).await;
    let ex = e.api.wait_executions_done("prj", pid, 3).await;
    assert_eq!(
        ex.iter().filter(|x| x["status"] == "Error").count(),
        2,
        "{ex:?}"
    );
    rx.set_default(Reply::status(200));
    let r = e
        .api
        .post(&format!("{}/{pid}/redeliver", policies("prj")), &json!({}))
        .await
        .expect(200);
    assert_eq!(r.json()["redelivered"], 2);
    let got = rx.wait_for(9, SOON).await;
    let tags: BTreeSet<String> = got[7..].iter().map(tag_of).collect();
    assert_eq!(tags, BTreeSet::from(["v2".to_string(), "v3".to_string()]));
    let ex = e.api.wait_executions_done("prj", pid, 3).await;
    assert!(ex.iter().all(|x| x["status"] == "Success"), "{ex:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. switches, 5. filters

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_policy_and_global_switch_send_nothing() {
    let e = env("").await;
    let rx = Receiver::start().await;
    let mut body = policy("off", vec![target(&rx.url())]);
    body["enabled"] = json!(false);
    let p = e.api.create_policy("prj", &body).await;
    assert_eq!(p["enabled"], false);
    let pid = p["id"].as_i64().unwrap();
    e.pusher.push("prj/app", "disabled").await;
    rx.expect_no_more_than(0, QUIET).await;
    assert!(e.api.executions("prj", pid).await.is_empty());

    // enable the policy: new events flow
    body["enabled"] = json!(true);
    e.api
        .put(&format!("{}/{pid}", policies("prj")), &body)
        .await
        .expect(200);
    e.pusher.push("prj/app", "enabled").await;
    let got = rx.wait_for(1, SOON).await;
    assert_eq!(tag_of(&got[0]), "enabled");

    // the system switch
    let cfg = e
        .api
        .get("/api/v2.0/configurations")
        .await
        .expect(200)
        .json();
    assert_eq!(cfg["notification_enable"]["value"], true);
    let r = e
        .api
        .put(
            "/api/v2.0/configurations",
            &json!({"notification_enable": false}),
        )
        .await
        .expect(200);
    assert_eq!(r.json()["notification_enable"]["value"], false);
    let cfg = e
        .api
        .get("/api/v2.0/configurations")
        .await
        .expect(200)
        .json();
    assert_eq!(cfg["notification_enable"]["value"], false);
    e.pusher.push("prj/app", "switched-off").await;
    rx.expect_no_more_than(1, QUIET).await;
    // bad values are refused and change nothing
    e.api
        .put(
            "/api/v2.0/configurations",
            &json!({"notification_enable": "yes"}),
        )
        .await
        .expect(400);
    e.api
        .put("/api/v2.0/configurations", &json!({"email_host": "x"}))
        .await
        .expect(400);

    e.api
        .put(
            "/api/v2.0/configurations",
            &json!({"notification_enable": true}),
        )
        .await
        .expect(200);
    e.pusher.push("prj/app", "switched-on").await;
    let got = rx.wait_for(2, SOON).await;
    rx.expect_no_more_than(2, QUIET).await;
    assert_eq!(tag_of(&got[1]), "switched-on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_repositories_and_tags() {
    let e = env("").await;
    let rx = Receiver::start().await;
    let mut body = policy("filtered", vec![target(&rx.url())]);
    body["filters"] = json!({"repositories": ["team/*"], "tags": ["v*"]});
    let p = e.api.create_policy("prj", &body).await;
    assert_eq!(
        p["filters"],
        json!({"repositories": ["team/*"], "tags": ["v*"]})
    );
    for (repo, tag) in [
        ("prj/team/app", "latest"),
        ("prj/other/app", "v1"),
        ("prj/team/app", "v1"),
        ("prj/team", "v9"),
        ("prj/team/deep/app", "v3"),
        ("prj/team/api", "v2.0"),
    ] {
        e.pusher.push(repo, tag).await;
    }
    rx.wait_for(2, SOON).await;
    rx.expect_no_more_than(2, QUIET).await;
    let got: BTreeSet<String> = rx
        .requests()
        .iter()
        .map(|r| {
            let v = r.json();
            format!(
                "{}:{}",
                v["event_data"]["repository"]["repo_full_name"]
                    .as_str()
                    .unwrap(),
                v["event_data"]["resources"][0]["tag"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([
            "prj/team/app:v1".to_string(),
            "prj/team/api:v2.0".to_string()
        ])
    );
    // empty patterns are refused
    let mut bad = policy("bad", vec![target(&rx.url())]);
    bad["filters"] = json!({"tags": [" "]});
    let r = e.api.post(&policies("prj"), &bad).await.expect(400);
    assert!(r.error_message().starts_with("filters.tags[0]:"));
}

// ---------------------------------------------------------------------------------------------
// 6. headers: Authorization, signature, User-Agent

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_header_signature_and_user_agent() {
    let e = env("").await;
    let rx = Receiver::start().await;
    let (secret, key) = new_secret();
    let mut t = target(&format!("{}/signed", rx.url()));
    t["auth_header"] = json!("Bearer tok-123");
    t["secret"] = json!(secret);
    let mut plain = json!({"type": "http", "address": format!("{}/plain", rx.url()), "payload_format": "CloudEvents"});
    plain["secret"] = json!("not-base64-just-a-string");
    e.api
        .create_policy("prj", &policy("headers", vec![t, plain]))
        .await;
    e.pusher.push("prj/app", "v1").await;
    rx.wait_for(2, SOON).await;
    let got = rx.requests();
    let signed = got.iter().find(|r| r.path == "/signed").unwrap();
    let plain = got.iter().find(|r| r.path == "/plain").unwrap();
    assert_eq!(signed.header("authorization"), Some("Bearer tok-123"));
    assert_eq!(plain.header("authorization"), None);
    assert_signed(signed, &key);
    // a secret that is not whsec_<base64> is used as is
    assert_signed(plain, b"not-base64-just-a-string");
    let ua = format!("wharf/{}", env!("CARGO_PKG_VERSION"));
    for r in &got {
        assert_eq!(r.header("user-agent"), Some(ua.as_str()));
    }
    // the check is real: another body, id or key does not verify
    let header = signed.header("webhook-signature").unwrap();
    let (id, ts) = (
        webhook_id(signed),
        signed.header("webhook-timestamp").unwrap(),
    );
    let other_body = signed.text().replace("v1", "v2");
    assert!(!signature_matches(
        header,
        &expected_signature(&key, &id, ts, other_body.as_bytes())
    ));
    assert!(!signature_matches(
        header,
        &expected_signature(&key, "msg_other", ts, &signed.body)
    ));
    assert!(!signature_matches(
        header,
        &expected_signature(&new_secret().1, &id, ts, &signed.body)
    ));
}

// ---------------------------------------------------------------------------------------------
// 7. SSRF guard and the test endpoint

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_guard_refuses_special_addresses_without_allow_list() {
    let registry = Registry::start().await;
    // no allow-list: loopback and private targets are refused
    let wharf = Wharf::start(&registry.url()).await;
    let api = Api::admin(&wharf.url());
    let rx = Receiver::start().await;
    for address in [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
        format!("http://[::1]:{}/", rx.addr().port()),
        rx.url(),
        format!("http://localhost:{}/", rx.addr().port()),
        "http://[::ffff:127.0.0.1]/".to_string(),
        "http://0.0.0.0/".to_string(),
    ] {
        let r = api
            .post(&policies("prj"), &policy("ssrf", vec![target(&address)]))
            .await
            .expect(400);
        let msg = r.error_message();
        assert!(
            msg.starts_with("targets[0].address:") && msg.contains("allowed_target_networks"),
            "{address}: {msg}"
        );
        let r = api
            .post(
                &format!("{}/test", policies("prj")),
                &json!({"targets": [target(&address)]}),
            )
            .await
            .expect(400);
        assert!(
            r.error_message().starts_with("targets[0].address:"),
            "{address}: {}",
            r.text
        );
    }
    assert_eq!(rx.count(), 0, "nothing may reach a refused target");
    assert_eq!(
        api.get(&policies("prj")).await.expect(200).json(),
        json!([])
    );

    // with the allow-list, the loopback receiver is a valid target
    let allowed = Wharf::builder(&registry.url()).yaml(FAST).start().await;
    let api = Api::admin(&allowed.url());
    api.create_policy("prj", &policy("ok", vec![target(&rx.url())]))
        .await;
    Pusher::new(&allowed.url()).push("prj/app", "v1").await;
    rx.wait_for(1, SOON).await;
    // … but not the metadata service, nor IPv6 loopback
    for address in [
        "http://169.254.169.254/".to_string(),
        format!("http://[::1]:{}/", rx.addr().port()),
    ] {
        api.post(&policies("prj"), &policy("meta", vec![target(&address)]))
            .await
            .expect(400);
    }
}

/// The guard is enforced again when a delivery is sent, after DNS resolution: targets saved
/// while loopback was allowed are refused once the allow-list no longer covers them, both an IP
/// literal and a host name that resolves to loopback (`localhost`); nothing reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_guard_is_enforced_again_at_delivery_time() {
    let registry = Registry::start().await;
    let rx = Receiver::start().await;
    let by_name = format!("http://localhost:{}/", rx.addr().port());
    let mut first = WharfBuilder::new(&registry.url()).yaml(FAST).spawn().await;
    let pid = Api::admin(&first.url())
        .create_policy(
            "prj",
            &policy("rebind", vec![target(&rx.url()), target(&by_name)]),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    first.sigterm();
    assert_eq!(
        first.wait_exit(Duration::from_secs(15)).await.code(),
        Some(0)
    );

    // the same database, without the allow-list
    let second = WharfBuilder::new(&registry.url())
        .yaml("notification: {webhook_job_max_retry: 0}\n")
        .yaml(&format!("data_dir: {}\n", first.data_dir().display()))
        .spawn()
        .await;
    Pusher::new(&second.url()).push("prj/app", "v1").await;
    let api = Api::admin(&second.url());
    let ex = api.wait_executions_done("prj", pid, 2).await;
    for x in &ex {
        assert_eq!(x["status"], "Error", "{x}");
        let tasks = api.tasks("prj", pid, x["id"].as_i64().unwrap()).await;
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        assert_eq!(
            tasks[0]["extra_attrs"]["error_kind"],
            "refused_target",
            "{tasks:?}\nlog:\n{}",
            second.log()
        );
        assert!(tasks[0]["extra_attrs"]["status_code"].is_null());
    }
    rx.expect_no_more_than(0, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_endpoint_reports_success_and_why_it_failed() {
    let e = env("").await;
    let rx = Receiver::start().await;
    let test = format!("{}/test", policies("prj"));
    let body = |address: String| json!({"targets": [target(&address)]});

    // 2xx → 200, and the receiver got a test event
    let r = e.api.post(&test, &body(rx.url())).await.expect(200);
    assert_eq!(r.json()["results"][0]["status"], 200, "{}", r.text);
    let got = rx.wait_for(1, SOON).await;
    let v = got[0].json();
    assert_eq!(v["type"], "PUSH_ARTIFACT");
    assert_eq!(v["event_data"]["repository"]["namespace"], "prj");
    assert_eq!(v["event_data"]["custom_attributes"]["test"], "true");
    assert!(got[0].header("webhook-id").is_some());

    // 500 → 400 naming the status
    rx.push(Reply::status(500));
    let r = e.api.post(&test, &body(rx.url())).await.expect(400);
    let msg = r.error_message();
    assert!(msg.contains("status 500"), "{msg}");
    assert!(msg.starts_with("targets[0]"), "{msg}");

    // a timeout → 400 saying so
    rx.push(Reply::delay(Duration::from_secs(3), Reply::status(200)));
    let started = Instant::now();
    let r = e.api.post(&test, &body(rx.url())).await.expect(400);
    assert!(r.error_message().contains("timeout"), "{}", r.text);
    assert!(started.elapsed() < Duration::from_millis(2500));

    // connection refused (a closed port) → 400
    let r = e
        .api
        .post(&test, &body(format!("http://127.0.0.1:{}/", closed_port())))
        .await
        .expect(400);
    assert!(r.error_message().contains("refused"), "{}", r.text);

    // a blocked address → 400
    let r = e
        .api
        .post(&test, &body("http://169.254.169.254/".into()))
        .await
        .expect(400);
    assert!(
        r.error_message().contains("link-local"),
        "{}",
        r.error_message()
    );

    // several targets: every failure is reported
    rx.push(Reply::status(200));
    let r = e
        .api
        .post(
            &test,
            &json!({"targets": [
                target(&rx.url()),
                target(&format!("http://127.0.0.1:{}/", closed_port())),
            ]}),
        )
        .await
        .expect(400);
    assert!(r.error_message().starts_with("targets[1]"), "{}", r.text);
    // the test endpoint does not create policies nor deliveries
    assert_eq!(
        e.api.get(&policies("prj")).await.expect(200).json(),
        json!([])
    );
}

// ---------------------------------------------------------------------------------------------
// 8. secrets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_kept_on_put_and_never_logged() {
    let registry = Registry::start().await;
    // auth headers masked too (Harbor reveals them; tests/it/harbor.rs covers that default)
    let wharf = WharfBuilder::new(&registry.url())
        .yaml(FAST)
        .yaml("api: {reveal_auth_header: false}")
        .yaml("log: {level: \"debug,hyper=info,h2=info,rustls=info\"}")
        .spawn()
        .await;
    let api = Api::admin(&wharf.url());
    let rx = Receiver::start().await;
    let (secret, key) = new_secret();
    let auth = "Bearer sup3r-s3cret-t0ken-4711";
    let mut t = target(&rx.url());
    t["auth_header"] = json!(auth);
    t["secret"] = json!(secret);
    let b64 = secret.trim_start_matches("whsec_").to_string();
    let leaks = |text: &str| -> Vec<&str> {
        [auth, "sup3r-s3cret", secret.as_str(), b64.as_str()]
            .into_iter()
            .filter(|s| text.contains(s))
            .collect()
    };
    let masked = |v: &Value, where_: &str| {
        for t in v["targets"].as_array().unwrap() {
            assert_eq!(t["auth_header"], "***", "{where_}: {v}");
            assert_eq!(t["secret"], "***", "{where_}: {v}");
        }
    };

    let r = api
        .post(&policies("prj"), &policy("secret", vec![t.clone()]))
        .await
        .expect(201);
    assert!(leaks(&r.text).is_empty(), "create: {}", r.text);
    let created = r.json();
    masked(&created, "create");
    let pid = created["id"].as_i64().unwrap();
    let r = api.get(&policies("prj")).await.expect(200);
    assert!(leaks(&r.text).is_empty(), "list: {}", r.text);
    masked(&r.json()[0], "list");
    let r = api
        .get(&format!("{}/{pid}", policies("prj")))
        .await
        .expect(200);
    assert!(leaks(&r.text).is_empty(), "get: {}", r.text);
    masked(&r.json(), "get");

    // PUT the masked policy back with a changed description: the secrets are kept
    let mut back = r.json();
    back["description"] = json!("edited in a UI that only saw ***");
    let r = api
        .put(&format!("{}/{pid}", policies("prj")), &back)
        .await
        .expect(200);
    assert!(leaks(&r.text).is_empty(), "update: {}", r.text);
    masked(&r.json(), "update");
    assert_eq!(r.json()["description"], "edited in a UI that only saw ***");

    Pusher::new(&wharf.url()).push("prj/app", "v1").await;
    let got = rx.wait_for(1, SOON).await;
    assert_eq!(got[0].header("authorization"), Some(auth));
    assert_signed(&got[0], &key);

    // "***" cannot carry the auth header to another address (it would leak it there)
    let elsewhere = Receiver::start().await;
    let mut moved = back.clone();
    moved["targets"][0]["address"] = json!(elsewhere.url());
    let r = api
        .put(&format!("{}/{pid}", policies("prj")), &moved)
        .await
        .expect(400);
    assert!(
        r.error_message().starts_with("targets[0].auth_header:"),
        "{}",
        r.text
    );
    let r = api
        .post(
            &policies("prj"),
            &policy("copycat", vec![moved["targets"][0].clone()]),
        )
        .await
        .expect(400);
    assert!(r.error_message().starts_with("targets[0].auth_header:"));
    // a second target with "***" next to the original one gets nothing either
    let mut added = back.clone();
    let mut second = moved["targets"][0].clone();
    second["secret"] = json!("");
    added["targets"] = json!([back["targets"][0].clone(), second]);
    api.put(&format!("{}/{pid}", policies("prj")), &added)
        .await
        .expect(400);
    assert_eq!(elsewhere.count(), 0);

    // executions, tasks and the lasttrigger list do not show them either
    let ex = api.wait_executions_done("prj", pid, 1).await;
    let eid = ex[0]["id"].as_i64().unwrap();
    for path in [
        format!("{}/{pid}/executions", policies("prj")),
        format!("{}/{pid}/executions/{eid}/tasks", policies("prj")),
        "/api/v2.0/projects/prj/webhook/lasttrigger".to_string(),
    ] {
        let r = api.get(&path).await.expect(200);
        assert!(leaks(&r.text).is_empty(), "{path}: {}", r.text);
    }

    // an empty string removes a secret; a new value replaces it
    let mut cleared = back.clone();
    cleared["targets"][0]["auth_header"] = json!("Basic bmV3OnZhbHVl");
    cleared["targets"][0]["secret"] = json!("");
    let r = api
        .put(&format!("{}/{pid}", policies("prj")), &cleared)
        .await
        .expect(200);
    assert_eq!(r.json()["targets"][0]["auth_header"], "***");
    assert_eq!(r.json()["targets"][0]["secret"], "");
    Pusher::new(&wharf.url()).push("prj/app", "v2").await;
    let got = rx.wait_for(2, SOON).await;
    assert_eq!(got[1].header("authorization"), Some("Basic bmV3OnZhbHVl"));
    assert_eq!(got[1].header("webhook-signature"), None);

    // a failing target's attempts get logged (warn): still without secrets
    rx.push(Reply::status(500));
    Pusher::new(&wharf.url()).push("prj/app", "v3").await;
    rx.wait_for(4, SOON).await;
    api.wait_executions_done("prj", pid, 3).await;

    let log = wharf.log();
    assert!(
        log.contains("webhook policy created") && log.contains("delivery attempt failed"),
        "the log is captured: {log}"
    );
    let leaked = leaks(&log);
    assert!(leaked.is_empty(), "secrets in the log: {leaked:?}\n{log}");
    assert!(
        !log.contains("bmV3OnZhbHVl"),
        "the new auth header is in the log:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. roles

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_admins_are_confined_to_their_projects() {
    let dir = tempfile::tempdir().unwrap();
    let mut htpasswd = Vec::new();
    for (u, p) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        let out = std::process::Command::new(tools::htpasswd())
            .args(["-Bbn", u, p])
            .output()
            .unwrap();
        assert!(out.status.success());
        htpasswd.extend_from_slice(String::from_utf8(out.stdout).unwrap().trim().as_bytes());
        htpasswd.push(b'\n');
    }
    let file = dir.path().join("users.htpasswd");
    std::fs::write(&file, htpasswd).unwrap();
    let e = env(&format!(
        "users: {{htpasswd: {}}}\nprojects: {{a: {{admins: [alice]}}, b: {{admins: [bob]}}}}\n",
        file.display()
    ))
    .await;
    let rx = Receiver::start().await;
    let alice = e.api.as_user("alice", "alice-pw");
    let bob = e.api.as_user("bob", "bob-pw");

    // alice: CRUD in a
    let pa = alice
        .create_policy("a", &policy("a-hook", vec![target(&rx.url())]))
        .await;
    assert_eq!(pa["creator"], "alice");
    let a_id = pa["id"].as_i64().unwrap();
    alice.get(&policies("a")).await.expect(200);
    alice
        .get(&format!("{}/{a_id}", policies("a")))
        .await
        .expect(200);
    alice
        .put(
            &format!("{}/{a_id}", policies("a")),
            &policy("a-hook2", vec![target(&rx.url())]),
        )
        .await
        .expect(200);
    alice
        .get("/api/v2.0/projects/a/webhook/lasttrigger")
        .await
        .expect(200);
    alice
        .post(
            &format!("{}/test", policies("a")),
            &json!({"targets": [target(&rx.url())]}),
        )
        .await
        .expect(200);
    let a_project_id = pa["project_id"].as_i64().unwrap();
    alice
        .get(&policies(&a_project_id.to_string()))
        .await
        .expect(200);

    // bob's project b
    let pb = bob
        .create_policy("b", &policy("b-hook", vec![target(&rx.url())]))
        .await;
    let b_id = pb["id"].as_i64().unwrap();
    let b_project_id = pb["project_id"].as_i64().unwrap();

    // alice on b: 403
    alice.get(&policies("b")).await.expect(403);
    alice
        .get(&policies(&b_project_id.to_string()))
        .await
        .expect(403);
    let evil = policy("evil", vec![target(&rx.url())]);
    alice.post(&policies("b"), &evil).await.expect(403);
    alice.expect_on_policy("b", b_id, &evil, 403).await;
    alice
        .get("/api/v2.0/projects/b/webhook/lasttrigger")
        .await
        .expect(403);
    // a project nobody administers
    alice.get(&policies("c")).await.expect(403);
    // an unknown project id (or one past int64) looks to a user as a forbidden one (Harbor's
    // 403); the administrator is told it is not there; a stranger is asked to sign in
    let unknown = alice
        .get(&policies("424242"))
        .await
        .expect(403)
        .error_message();
    let hidden = alice
        .get(&policies(&b_project_id.to_string()))
        .await
        .expect(403)
        .error_message();
    assert_eq!(unknown, "alice is not an administrator of project 424242");
    assert_eq!(
        hidden,
        format!("alice is not an administrator of project {b_project_id}")
    );
    alice
        .get(&policies("99999999999999999999"))
        .await
        .expect(403);
    e.api.get(&policies("424242")).await.expect(404);
    e.api
        .as_user("mallory", "nope")
        .get(&policies("99999999999999999999"))
        .await
        .expect(401);

    // no IDOR: b's policy id under project a is not found, whatever the verb
    alice.expect_on_policy("a", b_id, &evil, 404).await;
    let still = bob
        .get(&format!("{}/{b_id}", policies("b")))
        .await
        .expect(200)
        .json();
    assert_eq!(still["name"], "b-hook");

    // system settings: admin only
    alice
        .put(
            "/api/v2.0/configurations",
            &json!({"notification_enable": false}),
        )
        .await
        .expect(403);
    alice.get("/api/v2.0/configurations").await.expect(403);
    let cfg = e
        .api
        .get("/api/v2.0/configurations")
        .await
        .expect(200)
        .json();
    assert_eq!(cfg["notification_enable"]["value"], true);

    // wrong passwords and unknown users: 401
    e.api
        .as_user("alice", "wrong")
        .get(&policies("a"))
        .await
        .expect(401);
    e.api
        .as_user("admin", "wrong")
        .get(&policies("a"))
        .await
        .expect(401);
    e.api
        .as_user("mallory", "alice-pw")
        .get(&policies("a"))
        .await
        .expect(401);
    // the admin sees both
    e.api.get(&policies("a")).await.expect(200);
    e.api.get(&policies("b")).await.expect(200);

    // alice deletes her own
    alice
        .delete(&format!("{}/{a_id}", policies("a")))
        .await
        .expect(200);
}

// ---------------------------------------------------------------------------------------------
// 10. crash durability

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_receiver_down_then_restart_delivers_every_event() {
    let registry = Registry::start().await;
    let port = closed_port();
    let address = format!("http://127.0.0.1:{port}/hook");
    let builder = WharfBuilder::new(&registry.url()).yaml(FAST).yaml(
        "notification:\n  webhook_job_max_retry: 1000\n  backoff: {initial: 100ms, multiplier: 2.0, max: 300ms, jitter: 0.1}\n  breaker_failures: 3\n  breaker_cooldown: 200ms\n  breaker_max_cooldown: 400ms\n",
    );
    let mut first = builder.clone().spawn().await;
    let api = Api::admin(&first.url());
    api.create_policy("prj", &policy("durable", vec![target(&address)]))
        .await;
    let pusher = Pusher::new(&first.url());
    let tags: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    for t in &tags {
        pusher.push("prj/app", t).await;
    }
    first.kill9();
    let first_log = first.log();

    let second = builder
        .clone()
        .yaml(&format!("data_dir: {}\n", first.data_dir().display()))
        .spawn()
        .await;
    let rx = Receiver::start_on(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let got = rx.wait_for(20, Duration::from_secs(20)).await;
    rx.expect_no_more_than(20, QUIET).await;
    let ids: HashSet<String> = got.iter().map(webhook_id).collect();
    assert_eq!(ids.len(), 20, "20 distinct events");
    let delivered: BTreeSet<String> = got.iter().map(tag_of).collect();
    assert_eq!(
        delivered,
        tags.iter().cloned().collect::<BTreeSet<_>>(),
        "first log:\n{first_log}\nsecond log:\n{}",
        second.log()
    );
    assert!(got.iter().all(|r| r.path == "/hook"));
    // every delivery succeeded after the restart; the failed attempts of the first process
    // were kept
    let api = Api::admin(&second.url());
    let pid = api.get(&policies("prj")).await.expect(200).json()[0]["id"]
        .as_i64()
        .unwrap();
    let ex = api.wait_executions_done("prj", pid, 20).await;
    assert!(ex.iter().all(|x| x["status"] == "Success"), "{ex:?}");
    assert!(
        ex.iter()
            .any(|x| x["extra_attrs"]["attempts"].as_u64().unwrap() >= 2),
        "the first process tried (and failed) before it was killed: {ex:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_events_attempts_requests_and_queue() {
    let e = env("notification: {webhook_job_max_retry: 5}").await;
    let rx = Receiver::start().await;
    rx.push(Reply::status(500));
    let pid = e
        .api
        .create_policy("prj", &policy("m", vec![target(&rx.url())]))
        .await["id"]
        .as_i64()
        .unwrap();
    e.pusher.push("prj/app", "v1").await;
    rx.wait_for(2, SOON).await;
    e.api.wait_executions_done("prj", pid, 1).await;
    let r = client()
        .get(format!("{}/metrics", e.wharf.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for line in [
        "wharf_events_total{type=\"PUSH_ARTIFACT\"} 1",
        "wharf_delivery_attempts_total{outcome=\"success\"} 1",
        "wharf_delivery_attempts_total{outcome=\"retry\"} 1",
        "wharf_requests_total{op=\"manifest_put\",status=\"201\"} 1",
        "wharf_deliveries{state=\"pending\"} 0",
        "wharf_deliveries{state=\"succeeded\"} 1",
        "wharf_deliveries{state=\"dead\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("wharf_requests_total{op=\"upload_start\"")),
        "{text}"
    );
    assert!(text.contains("wharf_delivery_attempt_duration_seconds_count 2"));
    // the push waited for its event's commit, once
    assert!(
        text.lines()
            .any(|l| l == "wharf_event_commit_duration_seconds_count 1"),
        "{text}"
    );

    // a pending delivery shows in the gauge
    rx.set_default(Reply::delay(Duration::from_secs(3), Reply::status(200)));
    e.pusher.push("prj/app", "v2").await;
    rx.wait_for(3, SOON).await;
    let text = crate::common::metrics_text(&e.wharf.url()).await;
    assert!(
        text.lines()
            .any(|l| l == "wharf_deliveries{state=\"running\"} 1"
                || l == "wharf_deliveries{state=\"pending\"} 1"),
        "{text}"
    );
    assert!(text.contains("wharf_events_total{type=\"PUSH_ARTIFACT\"} 2"));
}

// ---------------------------------------------------------------------------------------------
// 12. one dead target does not starve the others

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_target_does_not_starve_a_healthy_one() {
    let e = env(
        "notification:\n  webhook_job_max_retry: 10\n  breaker_failures: 2\n  breaker_cooldown: 5s\n  per_target_concurrency: 4\n",
    )
    .await;
    let dead = Receiver::start().await;
    let healthy = Receiver::start().await;
    dead.set_default(Reply::delay(Duration::from_secs(10), Reply::status(200)));
    e.api
        .create_policy("prj", &policy("dead", vec![target(&dead.url())]))
        .await;
    e.api
        .create_policy("prj", &policy("healthy", vec![target(&healthy.url())]))
        .await;
    let started = Instant::now();
    for i in 0..30 {
        e.pusher.push("prj/app", &format!("t{i}")).await;
    }
    let pushed = started.elapsed();
    let got = healthy.wait_for(30, Duration::from_secs(5)).await;
    let all = started.elapsed();
    let tags: HashSet<String> = got.iter().map(tag_of).collect();
    assert_eq!(tags.len(), 30);
    assert!(
        all < pushed + Duration::from_secs(3),
        "healthy target got everything {all:?} after the first push ({pushed:?} pushing)"
    );
    // the dead one saw no more than its concurrency before the circuit opened
    assert!(
        dead.count() <= 8,
        "the dead target got {} attempts",
        dead.count()
    );
}

// ---------------------------------------------------------------------------------------------
// regression: per-target concurrency is a hard limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_target_concurrency_is_never_exceeded() {
    let e = env("notification: {per_target_concurrency: 2}").await;
    let rx = Receiver::start().await;
    // answers of staggered length, so slots free up one at a time
    let holds: Vec<Duration> = [300, 900, 600, 600, 600, 600, 600, 600]
        .into_iter()
        .map(Duration::from_millis)
        .collect();
    rx.push_all(holds.iter().map(|d| Reply::delay(*d, Reply::status(200))));
    e.api
        .create_policy("prj", &policy("c", vec![target(&rx.url())]))
        .await;
    for i in 0..holds.len() {
        e.pusher.push("prj/app", &format!("t{i}")).await;
    }
    let got = rx.wait_for(holds.len(), SOON).await;
    // request i is open from its arrival until holds[i] later (minus a margin for scheduling)
    let margin = Duration::from_millis(50);
    let open: Vec<(Instant, Instant)> = got
        .iter()
        .zip(&holds)
        .map(|(r, h)| (r.at, r.at + *h - margin))
        .collect();
    let max = open
        .iter()
        .map(|(t, _)| open.iter().filter(|(a, b)| a <= t && t < b).count())
        .max()
        .unwrap();
    assert!(
        max <= 2,
        "{max} requests to one target were in flight at once (per_target_concurrency 2)"
    );
}

// regression: a burst for one target is sent as its attempts finish, not a claim per idle
// second. A claim that fills a target to its limit makes the dispatcher wait for one of its
// attempts to finish; a build that decided so from the attempts still in flight when it looked
// (they may all have finished by then) slept its idle second after each claim instead: 64
// deliveries per second in the bench's drain.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_one_target_is_not_paced_by_the_idle_timer() {
    let e = env("notification: {webhook_job_max_retry: 0, per_target_concurrency: 1}").await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(500));
    let pid = e
        .api
        .create_policy("prj", &policy("burst", vec![target(&rx.url())]))
        .await["id"]
        .as_i64()
        .unwrap();
    let n = 40;
    for i in 0..n {
        e.pusher.push("prj/app", &format!("b{i}")).await;
    }
    rx.wait_for(n, SOON).await;
    e.api.wait_executions_done("prj", pid, n).await;
    // all of them pending at once: claims of 4 (per_target_concurrency × 4), one after another
    rx.set_default(Reply::status(200));
    let t0 = Instant::now();
    let r = e
        .api
        .post(&format!("{}/{pid}/redeliver", policies("prj")), &json!({}))
        .await
        .expect(200);
    assert_eq!(r.json()["redelivered"], n);
    rx.wait_for(2 * n, SOON).await;
    let took = t0.elapsed();
    // paced by the idle timer: up to a second per claim after the first (9 s)
    assert!(
        took < Duration::from_millis(2500),
        "{n} redelivered deliveries took {took:?}"
    );
}

// regression: deleting a policy ends its deliveries, the one being attempted too

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_policy_stops_the_delivery_in_flight() {
    deleting_the_policy_ends_its_deliveries("", 0).await;
}

/// Regression: claims waiting for their target's turn were sent after their policy was
/// deleted (the deletion ended them in the store, but the process still held them), and a
/// success would then have turned them from dead to succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_policy_stops_the_claims_waiting_for_their_turn() {
    deleting_the_policy_ends_its_deliveries("", 2).await;
}

/// [`deleting_a_policy_stops_the_claims_waiting_for_their_turn`] on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_policy_stops_the_claims_waiting_for_their_turn_on_postgresql() {
    let url = crate::common::postgres::database().await;
    deleting_the_policy_ends_its_deliveries(&format!("store: {{url: \"{url}\"}}\n"), 2).await;
}

/// Push one image while the target takes longer than an attempt's timeout (1 s), then
/// `queued` more (claimed, waiting for the target's turn), delete the policy: nothing is sent
/// after the first attempt, every delivery ends dead, none is retried.
async fn deleting_the_policy_ends_its_deliveries(store: &str, queued: usize) {
    let e = env(&format!(
        "{store}notification: {{webhook_job_max_retry: 5, per_target_concurrency: 1}}\n"
    ))
    .await;
    let rx = Receiver::start().await;
    // the first attempt times out (1 s); the others wait for its turn
    rx.set_default(Reply::delay(
        Duration::from_millis(1500),
        Reply::status(200),
    ));
    let pid = e
        .api
        .create_policy("prj", &policy("del", vec![target(&rx.url())]))
        .await["id"]
        .as_i64()
        .unwrap();
    e.pusher.push("prj/app", "v1").await;
    rx.wait_for(1, SOON).await;
    for n in 0..queued {
        e.pusher.push("prj/app", &format!("q{n}")).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    e.api
        .delete(&format!("{}/{pid}", policies("prj")))
        .await
        .expect(200);
    rx.expect_no_more_than(1, Duration::from_millis(2500)).await;
    let text = crate::common::metrics_text(&e.wharf.url()).await;
    assert!(
        text.lines()
            .any(|l| l == format!("wharf_deliveries{{state=\"dead\"}} {}", queued + 1)),
        "{text}"
    );
}

// regression: a saturated target, or one whose circuit is open, does not make the dispatcher
// spin on its due deliveries (it claimed nothing and slept 1 ms, in a loop of write
// transactions)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_or_broken_target_does_not_make_the_dispatcher_spin() {
    let e = env(
        "notification:\n  webhook_job_max_retry: 10\n  breaker_failures: 2\n  breaker_cooldown: 30s\n  per_target_concurrency: 4\n",
    )
    .await;
    let dead = Receiver::start().await;
    dead.set_default(Reply::delay(Duration::from_secs(10), Reply::status(200)));
    e.api
        .create_policy("prj", &policy("dead", vec![target(&dead.url())]))
        .await;
    for i in 0..10 {
        e.pusher.push("prj/app", &format!("t{i}")).await;
    }
    dead.wait_for(4, SOON).await;
    let stats = e.wharf.app().store.stats();
    let commits = || stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    // four attempts hang (the target's limit), six deliveries are due
    let c0 = commits();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let busy = commits() - c0;
    // the attempts time out, the circuit opens for 30 s; ten deliveries are due
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c1 = commits();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open = commits() - c1;
    assert!(
        busy < 40 && open < 40,
        "database commits per second: {busy} while the target was busy, {open} while its circuit was open"
    );
    // four at once, maybe one more between the first two failures that opened the circuit
    assert!(dead.count() <= 6, "{} attempts", dead.count());
}

// regression: attempts in flight when a circuit opens do not extend its cool-down (each of
// them doubled it, so a blackholed target stayed shut for up to breaker_max_cooldown)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_is_probed_after_its_cooldown_although_many_attempts_failed_at_once() {
    let e = env(
        "notification:\n  webhook_job_max_retry: 10\n  breaker_failures: 1\n  breaker_cooldown: 1s\n  per_target_concurrency: 4\n",
    )
    .await;
    let rx = Receiver::start().await;
    // the first four attempts hang (time out after 1 s, within ~100 ms of each other); later
    // requests are answered at once
    rx.push_all((0..4).map(|_| Reply::delay(Duration::from_secs(10), Reply::status(200))));
    e.api
        .create_policy("prj", &policy("flaky", vec![target(&rx.url())]))
        .await;
    let started = Instant::now();
    for i in 0..8 {
        e.pusher.push("prj/app", &format!("t{i}")).await;
    }
    // open at ~1 s for 1 s, probed at ~2 s, then everything flows
    wait_until(
        "all eight events delivered",
        Duration::from_secs(8),
        || async {
            let tags: HashSet<String> = rx
                .requests()
                .iter()
                .filter(|r| !r.body.is_empty())
                .map(tag_of)
                .collect();
            (tags.len() == 8).then_some(())
        },
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(4000),
        "the circuit stayed open: everything was delivered only after {took:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// API error shape and client addresses

/// Errors axum answers by itself (bad path parameter, bad query, wrong method) come in the
/// API's JSON error shape too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_rejections_are_json_errors() {
    let env = env("").await;
    let r = env
        .api
        .get("/api/v2.0/projects/prj/webhook/policies/not-a-number")
        .await
        .expect(400);
    assert!(!r.error_message().is_empty());
    let r = env.api.get("/api/v1/events?limit=lots").await.expect(400);
    assert!(!r.error_message().is_empty());
    let r = env
        .api
        .call(reqwest::Method::DELETE, "/api/v1/events", None)
        .await
        .expect(405);
    assert_eq!(r.json()["errors"][0]["code"], "METHOD_NOT_ALLOWED");
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{:?}",
        r.headers
    );
    let r = env
        .api
        .call(
            reqwest::Method::POST,
            "/api/v2.0/projects/prj/webhook/policies",
            None,
        )
        .await;
    assert!(r.status >= 400 && r.status < 500);
    r.json();
}

/// The client address of the pull event of a manifest GET sent with `x_forwarded_for` (one
/// header line each) through a wharf with `trust_forwarded_headers: trusted`.
async fn pull_client_addr(trusted: bool, x_forwarded_for: &[&str]) -> Value {
    let env = env(&format!("trust_forwarded_headers: {trusted}")).await;
    env.pusher.push("prj/addr", "v1").await;
    let mut req = client()
        .get(format!("{}/v2/prj/addr/manifests/v1", env.wharf.url()))
        .header("accept", oci::MANIFEST_V1);
    for line in x_forwarded_for {
        req = req.header("x-forwarded-for", *line);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let pulls = wait_until("the pull event", SOON, || {
        let api = env.api.clone();
        async move {
            let v = api.get("/api/v1/events?type=PULL_ARTIFACT").await.json();
            (!v.as_array()?.is_empty()).then_some(v)
        }
    })
    .await;
    pulls[0]["client_addr"].clone()
}

/// With `trust_forwarded_headers`, an event's client address is the last `X-Forwarded-For`
/// address (the one the trusted load balancer appended; the earlier ones are the client's own
/// word); without it, the TCP peer (a client cannot pretend to be someone else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_follows_trust_forwarded_headers() {
    for (trusted, expected) in [(true, "10.0.0.1"), (false, "127.0.0.1")] {
        let got = pull_client_addr(trusted, &["203.0.113.7, 10.0.0.1"]).await;
        assert_eq!(got, expected, "trusted: {trusted}");
    }
}

// regression: a client's own `X-Forwarded-For` line named the address of its events when the
// load balancer added its own line after it (lines are one list, RFC 9110 5.3: the last
// address is the one the load balancer saw); the login throttle already took the last line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_for_line_of_the_client_does_not_name_the_event_address() {
    assert_eq!(
        pull_client_addr(true, &["6.6.6.6", "10.0.0.1"]).await,
        "10.0.0.1"
    );
}
