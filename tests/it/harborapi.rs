//! The real Harbor API client `harborapi` (PyPI, pinned, in the venv `scripts/deps.sh` makes)
//! against the real wharf binary: every webhook, project, user, systeminfo, ping, health and
//! jobs method it has, by project name and by numeric id, its `Link` pagination, and its
//! pydantic models validating every answer (`tests/harborapi_client.py` does the calls and
//! the checks; a failed check or a model validation error fails this test). Also: the auth
//! headers the client stored never reach wharf's log.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::api::ApiResp;
use crate::common::oci;
use crate::common::wharf::ADMIN_PASSWORD;
use crate::common::{Receiver, Registry, RegistryClient, WharfBuilder, client, tools, wait_until};

/// Loopback targets, fast attempts.
const FAST: &str = r#"
notification:
  allowed_target_networks: ["127.0.0.0/8"]
  webhook_job_http_client_timeout: 1
  backoff: {initial: 100ms, multiplier: 1.0, max: 100ms, jitter: 0.0}
  slack_interval: 10ms
"#;

/// An htpasswd file (bcrypt) with `users`.
pub fn htpasswd(dir: &std::path::Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = Vec::new();
    for (u, p) in users {
        let out = std::process::Command::new(tools::htpasswd())
            .args(["-Bbn", u, p])
            .output()
            .expect("running htpasswd");
        assert!(out.status.success(), "htpasswd -Bbn {u}");
        text.extend_from_slice(String::from_utf8(out.stdout).unwrap().trim().as_bytes());
        text.push(b'\n');
    }
    let file = dir.join("users.htpasswd");
    std::fs::write(&file, text).unwrap();
    file
}

async fn admin(method: reqwest::Method, url: &str, body: Option<&Value>) -> ApiResp {
    let mut rb = client()
        .request(method, url)
        .basic_auth("admin", Some(ADMIN_PASSWORD));
    if let Some(b) = body {
        rb = rb.json(b);
    }
    ApiResp::read(rb.send().await.expect("API request")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harborapi_drives_every_webhook_project_user_and_system_method() {
    let (python, script) = tools::harborapi_client();
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let users = htpasswd(dir.path(), &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let wharf = WharfBuilder::new(&registry.url())
        .yaml(FAST)
        .yaml(&format!(
            "users: {{htpasswd: {}}}\nprojects: {{a: {{admins: [alice]}}, b: {{}}, pub: {{public: true}}}}\n",
            users.display()
        ))
        .yaml("log: {level: \"debug,hyper=info,h2=info,rustls=info\"}")
        .spawn()
        .await;
    let base = wharf.url();
    let rx = Receiver::start().await;

    // project `seen` exists only because an image went through wharf
    let work = tempfile::tempdir().unwrap();
    let image = oci::build_image(&work.path().join("img"), "v0", &[1024]);
    let rc = RegistryClient::new(&base);
    rc.push_image("seen/app", "v0", &image).await;
    let seen = wait_until("project seen exists", Duration::from_secs(10), || async {
        let r = admin(
            reqwest::Method::GET,
            &format!("{base}/api/v2.0/projects/seen"),
            None,
        )
        .await;
        (r.status == 200).then(|| r.json())
    })
    .await;
    assert_eq!(seen["name"], "seen");
    // a policy there and two more pushes: two deliveries for the jobs view
    let r = admin(
        reqwest::Method::POST,
        &format!("{base}/api/v2.0/projects/seen/webhook/policies"),
        Some(&json!({
            "name": "jobs", "enabled": true, "event_types": ["PUSH_ARTIFACT"],
            "targets": [{"type": "http", "address": format!("{}/jobs", rx.url()), "auth_header": "Bearer jobs-s3cret"}],
        })),
    )
    .await
    .expect(201);
    let location = r.header("location").unwrap().to_string();
    let pushed_policy: i64 = location.rsplit('/').next().unwrap().parse().unwrap();
    rc.push_image("seen/app", "v1", &image).await;
    rc.push_image("seen/app", "v2", &image).await;
    rx.wait_for(2, Duration::from_secs(10)).await;
    wait_until("two successful jobs", Duration::from_secs(10), || async {
        let r = admin(
            reqwest::Method::GET,
            &format!("{base}/api/v2.0/projects/seen/webhook/jobs?policy_id={pushed_policy}&status=Success"),
            None,
        )
        .await;
        (r.header("x-total-count") == Some("2")).then_some(())
    })
    .await;

    let report = dir.path().join("report.json");
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(&script)
        .args(["--url", &format!("{base}/api/v2.0")])
        .args(["--admin-password", ADMIN_PASSWORD])
        .args(["--user", "alice:alice-pw"])
        .args(["--receiver", &rx.url()])
        .args(["--pushed-policy", &pushed_policy.to_string()])
        .args([
            "--version",
            &format!("v{}-wharf", env!("CARGO_PKG_VERSION")),
        ])
        .arg("--report")
        .arg(&report);
    let out = crate::common::cmd::run(cmd, Duration::from_secs(300)).await;
    println!("{}", out.stdout);
    assert!(
        out.success(),
        "harborapi run failed:\n{out}\nwharf log (tail):\n{}",
        tail(&wharf.log(), 60)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let results = r["results"].as_array().unwrap();
    assert!(results.len() > 100, "{} calls", results.len());
    for method in [
        "create_webhook_policy",
        "get_webhook_policies",
        "get_webhook_policy",
        "update_webhook_policy",
        "delete_webhook_policy",
        "get_webhook_supported_events",
        "get_webhook_policy_last_trigger",
        "get_webhook_jobs",
        "project_exists",
        "get_projects",
        "get_project",
        "get_current_user",
        "get_users",
        "get_user",
        "search_users_by_username",
        "get_user_by_username",
        "get_system_info",
        "ping",
        "health_check",
    ] {
        assert!(
            results
                .iter()
                .any(|x| x["method"] == method && x["result"] == "ok"),
            "{method} never succeeded"
        );
    }
    // auth headers are answered to the API, never logged
    let log = wharf.log();
    for secret in ["t0ken-", "jobs-s3cret", "alice-pw", ADMIN_PASSWORD] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
