//! Harbor API parity beyond what the harborapi client exercises (tests/it/harborapi.rs):
//! projects from config, policies and traffic with ids stable across restarts; Harbor's list
//! conventions on executions and the event log, with bad input; terraform's calls and a
//! read-after-write that converges; SCANNING_STOPPED, REPLICATION and TAG_RETENTION; Slack
//! targets' executions; `repository.date_created`; `events.multi_platform: per_manifest`;
//! `/health` with a registry down.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::api::ApiResp;
use crate::common::oci;
use crate::common::wharf::ADMIN_PASSWORD;
use crate::common::{Receiver, Registry, RegistryClient, Skopeo, Wharf, client, wait_until};

const FAST: &str = r#"
notification:
  allowed_target_networks: ["127.0.0.0/8"]
  webhook_job_http_client_timeout: 1
  backoff: {initial: 100ms, multiplier: 1.0, max: 100ms, jitter: 0.0}
  slack_interval: 10ms
"#;

const SOON: Duration = Duration::from_secs(10);

/// One request as admin (`auth`: true), or anonymous.
async fn call(
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
    auth: bool,
    headers: &[(&str, &str)],
) -> ApiResp {
    let mut rb = client().request(method, url);
    if auth {
        rb = rb.basic_auth("admin", Some(ADMIN_PASSWORD));
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    ApiResp::read(rb.send().await.expect("request")).await
}

async fn get(url: &str) -> ApiResp {
    call(reqwest::Method::GET, url, None, true, &[]).await
}

async fn post(url: &str, body: &Value) -> ApiResp {
    call(reqwest::Method::POST, url, Some(body), true, &[]).await
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_come_from_config_policies_and_traffic_with_ids_that_never_change() {
    let registry = Registry::start().await;
    let data = tempfile::tempdir().unwrap();
    let builder = Wharf::builder(&registry.url()).yaml(FAST).yaml(&format!(
        "data_dir: {}\nprojects: {{cfg: {{public: true}}}}\n",
        data.path().display()
    ));
    let wharf = builder.clone().start().await;
    let base = wharf.url();
    // no traffic, no policy: the config's project is there
    let r = get(&format!("{base}/api/v2.0/projects")).await.expect(200);
    assert_eq!(names(&r.json()), ["cfg"]);
    assert_eq!(r.json()[0]["metadata"]["public"], "true");
    // a policy makes one; traffic makes one (a pull as much as a push)
    post(
        &format!("{base}/api/v2.0/projects/pol/webhook/policies"),
        &json!({"name": "p", "event_types": ["PUSH_ARTIFACT"], "targets": [{"address": "http://127.0.0.1:9/x"}]}),
    )
    .await
    .expect(201);
    let work = tempfile::tempdir().unwrap();
    let image = oci::build_image(&work.path().join("img"), "v1", &[512]);
    RegistryClient::new(&registry.url())
        .push_image("pulled/app", "v1", &image)
        .await;
    RegistryClient::new(&base)
        .push_image("traffic/team/app", "v1", &image)
        .await;
    for _ in 0..3 {
        let r = client()
            .get(format!("{base}/v2/pulled/app/manifests/v1"))
            .header("accept", oci::MANIFEST_V1)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let listed = wait_until("four projects", SOON, || async {
        let r = get(&format!("{base}/api/v2.0/projects?page_size=0")).await;
        (r.json().as_array().map(Vec::len) == Some(4)).then(|| r.json())
    })
    .await;
    assert_eq!(names(&listed), ["cfg", "pol", "pulled", "traffic"]);
    let ids: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["project_id"].as_i64().unwrap())
        .collect();
    let traffic = &listed[3];
    assert_eq!(traffic["repo_count"], 1);
    assert_eq!(traffic["metadata"]["public"], "false");
    assert_eq!(traffic["owner_name"], "admin");
    assert!(traffic.get("registry_id").is_none(), "not a proxy cache");
    // HEAD, by name and id; X-Is-Resource-Name makes a number a name
    let head = |path: String, headers: &'static [(&'static str, &'static str)]| async move {
        call(reqwest::Method::HEAD, &path, None, true, headers)
            .await
            .status
    };
    assert_eq!(
        head(format!("{base}/api/v2.0/projects/traffic"), &[]).await,
        200
    );
    assert_eq!(
        head(format!("{base}/api/v2.0/projects/{}", ids[3]), &[]).await,
        200
    );
    assert_eq!(
        head(
            format!("{base}/api/v2.0/projects/{}", ids[3]),
            &[("X-Is-Resource-Name", "true")]
        )
        .await,
        404
    );
    assert_eq!(
        head(format!("{base}/api/v2.0/projects?project_name=pol"), &[]).await,
        200
    );
    assert_eq!(
        head(format!("{base}/api/v2.0/projects?project_name=none"), &[]).await,
        404
    );
    assert_eq!(head(format!("{base}/api/v2.0/projects"), &[]).await, 422);
    // `name=` replaces q's name term (Harbor sets the keyword); an AND-list is ignored
    let r = get(&format!("{base}/api/v2.0/projects?q=name%3D~zzz&name=pol"))
        .await
        .expect(200);
    assert_eq!(names(&r.json()), ["pol"]);
    let r = get(&format!(
        "{base}/api/v2.0/projects?q=project_id%3D%28{}%20{}%29",
        ids[0], ids[1]
    ))
    .await
    .expect(200);
    assert_eq!(names(&r.json()), ["cfg", "pol", "pulled", "traffic"]);
    // webhook endpoints take the same ids
    get(&format!(
        "{base}/api/v2.0/projects/{}/webhook/policies",
        ids[1]
    ))
    .await
    .expect(200);
    let r = get(&format!("{base}/api/v2.0/projects/424242/webhook/policies")).await;
    assert_eq!(r.expect(404).error().0, "NOT_FOUND");
    let r = get(&format!("{base}/api/v2.0/projects/424242"))
        .await
        .expect(404);
    assert_eq!(r.error_message(), "project 424242 not found");
    wharf.shutdown().await;

    // after a restart: the same ids
    let wharf = builder.start().await;
    let again = get(&format!("{}/api/v2.0/projects?page_size=0", wharf.url()))
        .await
        .expect(200)
        .json();
    assert_eq!(again, listed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_follow_harbors_conventions_on_executions_and_the_event_log() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url()).yaml(FAST).start().await;
    let base = wharf.url();
    let rx = Receiver::start().await;
    let r = post(
        &format!("{base}/api/v2.0/projects/prj/webhook/policies"),
        &json!({"name": "p", "enabled": true, "event_types": ["PUSH_ARTIFACT"], "targets": [{"type": "http", "address": rx.url()}]}),
    )
    .await
    .expect(201);
    let pid = r.json()["id"].as_i64().unwrap();
    let work = tempfile::tempdir().unwrap();
    let image = oci::build_image(&work.path().join("img"), "v1", &[512]);
    let rc = RegistryClient::new(&base);
    for tag in ["a", "b", "c"] {
        rc.push_image("prj/app", tag, &image).await;
    }
    rx.wait_for(3, SOON).await;
    let ex = format!("{base}/api/v2.0/projects/prj/webhook/policies/{pid}/executions");
    wait_until("three successes", SOON, || async {
        let r = get(&format!("{ex}?q=status%3DSuccess")).await;
        (r.header("x-total-count") == Some("3")).then_some(())
    })
    .await;

    let r = get(&format!("{ex}?page_size=1&q=trigger%3DEVENT"))
        .await
        .expect(200);
    assert_eq!(r.header("x-total-count"), Some("3"));
    assert_eq!(
        r.header("link"),
        Some(
            format!(
                "</api/v2.0/projects/prj/webhook/policies/{pid}/executions?page=2&page_size=1&q=trigger=EVENT>; rel=\"next\""
            )
            .as_str()
        )
    );
    let first = r.json()[0]["id"].as_i64().unwrap();
    let r = get(&format!("{ex}?page=2&page_size=1&q=trigger%3DEVENT"))
        .await
        .expect(200);
    let link = r.header("link").unwrap();
    assert!(
        link.contains("page=1&page_size=1&q=trigger=EVENT>; rel=\"prev\" , <"),
        "{link}"
    );
    assert!(
        link.ends_with("page=3&page_size=1&q=trigger=EVENT>; rel=\"next\""),
        "{link}"
    );
    assert!(r.json()[0]["id"].as_i64().unwrap() < first, "newest first");
    let r = get(&format!("{ex}?sort=id")).await.expect(200);
    let ids: Vec<i64> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(r.json()[0]["vendor_type"], "WEBHOOK");
    assert_eq!(r.json()[0]["metrics"]["success_task_count"], 1);
    assert!(
        r.json()[0]["extra_attrs"]["payload"]
            .as_str()
            .unwrap()
            .contains("PUSH_ARTIFACT")
    );
    // id ranges and lists
    let r = get(&format!("{ex}?q=id%3D%5B{}~%5D", ids[1]))
        .await
        .expect(200);
    assert_eq!(r.header("x-total-count"), Some("2"));
    let r = get(&format!("{ex}?q=id%3D%7B{}%20{}%7D", ids[0], ids[2]))
        .await
        .expect(200);
    assert_eq!(r.header("x-total-count"), Some("2"));
    // by event type (read from the event since schema 19), on executions and jobs
    let jobs = format!("{base}/api/v2.0/projects/prj/webhook/jobs?policy_id={pid}");
    for (url, sep) in [(ex.as_str(), "?"), (jobs.as_str(), "&")] {
        for (t, n) in [("PUSH_ARTIFACT", "3"), ("PULL_ARTIFACT", "0")] {
            let r = get(&format!("{url}{sep}q=event_type%3D{t}"))
                .await
                .expect(200);
            assert_eq!(r.header("x-total-count"), Some(n), "{url} {t}");
        }
    }
    let r = get(&format!("{ex}?page_size=1")).await.expect(200);
    assert_eq!(r.json()[0]["extra_attrs"]["event_type"], "PUSH_ARTIFACT");

    // bad input: Harbor's statuses and error JSON, never a 500
    for (query, status, code, message) in [
        (
            "q=status",
            400,
            "BAD_REQUEST",
            "the query string must contain \"=\" and the key/value cannot be empty",
        ),
        (
            "q=id%3D%5B1~2~3%5D",
            400,
            "BAD_REQUEST",
            "invalid query string value: [1~2~3]",
        ),
        (
            "q=status%3D~",
            400,
            "BAD_REQUEST",
            "invalid query string value: ~",
        ),
        (
            "page_size=101",
            422,
            "UNPROCESSABLE_ENTITY",
            "validation failure list:\npage_size in query should be less than or equal to 100",
        ),
        (
            "page=x",
            422,
            "UNPROCESSABLE_ENTITY",
            "validation failure list:\npage in query must be of type int64: \"x\"",
        ),
        (
            "page=99999999999999999999",
            422,
            "UNPROCESSABLE_ENTITY",
            "validation failure list:\npage in query must be of type int64: \"99999999999999999999\"",
        ),
    ] {
        let r = get(&format!("{ex}?{query}")).await;
        assert_eq!(r.status, status, "{query}: {}", r.text);
        assert_eq!(
            r.error(),
            (code.to_string(), message.to_string()),
            "{query}"
        );
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/json")
        );
    }
    for query in [
        "page=0",
        "page=-1",
        "page_size=0",
        "page_size=-5",
        "page=9223372036854775807&page_size=100",
    ] {
        let r = get(&format!("{ex}?{query}")).await.expect(200);
        assert!(r.header("x-total-count").is_some(), "{query}");
    }
    assert_eq!(
        get(&format!("{ex}?page=0"))
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let far = get(&format!("{ex}?page=9223372036854775807&page_size=100")).await;
    assert_eq!((far.json(), far.header("link")), (json!([]), None));
    // tasks too
    let t = get(&format!(
        "{ex}/{first}/tasks?page_size=1&q=status%3DSuccess"
    ))
    .await
    .expect(200);
    assert_eq!(t.header("x-total-count"), Some("1"));
    get(&format!("{ex}/{first}/tasks?q=x")).await.expect(400);

    // the event log
    let ev = format!("{base}/api/v1/events");
    let r = get(&format!(
        "{ev}?page_size=2&q=repository%3D~APP&sort=-occurred_at"
    ))
    .await
    .expect(200);
    assert_eq!(r.header("x-total-count"), Some("3"));
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert_eq!(
        r.header("link"),
        Some(
            "</api/v1/events?page=2&page_size=2&q=repository=~APP&sort=-occurred_at>; rel=\"next\""
        )
    );
    let r = get(&format!("{ev}?type=PUSH_ARTIFACT&q=project%3Dother"))
        .await
        .expect(200);
    assert_eq!(
        (r.json(), r.header("x-total-count")),
        (json!([]), Some("0"))
    );
    // by id (kept as 16 bytes since schema 15): exactly, in any case, by part of its text,
    // within a range of texts, in a list; sorted by id as by its text
    let ids = texts(
        &get(&format!("{ev}?sort=id")).await.expect(200).json(),
        "id",
    );
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "sort=id");
    let id = &ids[1];
    let ev = &ev;
    let count = |q: String| async move {
        let r = get(&format!("{ev}?q={q}")).await.expect(200);
        let found = texts(&r.json(), "id");
        assert_eq!(
            r.header("x-total-count"),
            Some(found.len().to_string().as_str())
        );
        found
    };
    assert_eq!(count(format!("id%3D{id}")).await, std::slice::from_ref(id));
    assert_eq!(
        count(format!("id%3D{}", id.to_uppercase())).await,
        std::slice::from_ref(id)
    );
    assert_eq!(
        count(format!("id%3D~{}", &id[9..23].to_uppercase())).await,
        std::slice::from_ref(id)
    );
    assert_eq!(
        count(format!("id%3D%5B{id}~{id}%5D")).await,
        std::slice::from_ref(id)
    );
    assert_eq!(
        count(format!("id%3D%7B{id}%20not-an-id%7D")).await,
        std::slice::from_ref(id)
    );
    assert!(count("id%3Dnot-an-id".into()).await.is_empty());
    // by digest (a sha256 kept as 32 bytes on SQLite since schema 16), sorted by its text
    let all = get(&format!("{ev}?sort=digest,id"))
        .await
        .expect(200)
        .json();
    let digests = texts(&all, "digest");
    let mut sorted = digests.clone();
    sorted.sort();
    assert_eq!(digests, sorted, "sort=digest");
    let digest = &digests[0];
    let with = |d: &str| {
        let d = d.to_string();
        digests.iter().filter(move |x| **x == d).count()
    };
    assert_eq!(
        count(format!("digest%3D{digest}")).await.len(),
        with(digest)
    );
    assert_eq!(
        count(format!("digest%3D~{}", &digest[7..30].to_uppercase()))
            .await
            .len(),
        with(digest)
    );
    assert_eq!(
        count(format!("digest%3D%7B{digest}%20sha256:nothing%7D"))
            .await
            .len(),
        with(digest)
    );
    assert!(count("digest%3Dsha256:nothing".into()).await.is_empty());
    get(&format!("{ev}?q=type")).await.expect(400);
    get(&format!("{ev}?page_size=1000")).await.expect(422);
    get(&format!("{ev}?colour=red")).await.expect(400);
    // the older `limit` still works, beyond 100
    let r = get(&format!("{ev}?limit=1000")).await.expect(200);
    assert_eq!(r.json().as_array().unwrap().len(), 3);
}

/// The text of `key` in each item of the JSON list `list`.
fn texts(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e[key].as_str().unwrap().to_string())
        .collect()
}

/// terraform-provider-harbor's body and calls (ids in the path, a struct-tag typo key, zero
/// times): 201 with a relative Location, and reading back what was written converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_round_trip_converges_and_update_without_enabled_is_off() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(FAST)
        .yaml("projects: {team: {}}")
        .start()
        .await;
    let base = wharf.url();
    let project = get(&format!("{base}/api/v2.0/projects/team"))
        .await
        .expect(200)
        .json();
    let project_id = project["project_id"].as_i64().unwrap();
    let body = json!({"update_time": "0001-01-01T00:00:00Z", "description": "", "creator": "",
        "creation_time": "0001-01-01T00:00:00Z", "enabled": true,
        "targets": [{"type": "http", "auth_header": "Bearer s3", "skip_cert_verify": true,
                     "address": "https://127.0.0.1:9/hook", "payload_format:omitempty": ""}],
        "event_types": ["PUSH_ARTIFACT", "REPLICATION", "TAG_RETENTION", "QUOTA_WARNING"],
        "project_id": 0, "id": 0, "name": "ci"});
    let r = post(
        &format!("{base}/api/v2.0/projects/{project_id}/webhook/policies"),
        &body,
    )
    .await
    .expect(201);
    let location = r.header("location").unwrap().to_string();
    assert!(
        location.starts_with(&format!(
            "/api/v2.0/projects/{project_id}/webhook/policies/"
        )),
        "{location}"
    );
    let id = location.replace("/api", "").replace("/v2.0", "");
    let url = format!("{base}/api/v2.0{id}");
    let read = get(&url).await.expect(200).json();
    let t = &read["targets"][0];
    assert_eq!(
        (
            &read["name"],
            &read["description"],
            &read["enabled"],
            &t["type"],
            &t["address"],
            &t["auth_header"],
            &t["skip_cert_verify"],
        ),
        (
            &json!("ci"),
            &json!(""),
            &json!(true),
            &json!("http"),
            &json!("https://127.0.0.1:9/hook"),
            &json!("Bearer s3"),
            &json!(true)
        )
    );
    assert_eq!(read["project_id"], project_id);
    // the next plan changes nothing; an apply of the same body is 200 and reads back the same
    call(reqwest::Method::PUT, &url, Some(&body), true, &[])
        .await
        .expect(200);
    let again = get(&url).await.expect(200).json();
    assert_eq!(again["targets"], read["targets"]);
    assert_eq!(again["event_types"], read["event_types"]);
    // without `enabled`: off, as Harbor
    let mut off = body.clone();
    off.as_object_mut().unwrap().remove("enabled");
    call(reqwest::Method::PUT, &url, Some(&off), true, &[])
        .await
        .expect(200);
    assert_eq!(get(&url).await.json()["enabled"], false);
    // terraform deletes with 200
    call(reqwest::Method::DELETE, &url, None, true, &[])
        .await
        .expect(200);
    // the data source's scanner look-up: 404 means "no scanner"
    get(&format!("{base}/api/v2.0/projects/{project_id}/scanner"))
        .await
        .expect(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_stopped_is_delivered_and_slack_executions_are_slack() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(FAST)
        .yaml("side_api_token: side-token-0123456789")
        .start()
        .await;
    let base = wharf.url();
    let rx = Receiver::start().await;
    let r = post(
        &format!("{base}/api/v2.0/projects/prj/webhook/policies"),
        &json!({"name": "scans", "enabled": true,
                "event_types": ["SCANNING_STOPPED", "SCANNING_COMPLETED", "REPLICATION", "TAG_RETENTION"],
                "targets": [
                    {"type": "http", "address": format!("{}/ce", rx.url()), "payload_format": "CloudEvents"},
                    {"type": "slack", "address": format!("{}/slack", rx.url())},
                    {"type": "slack", "address": format!("{}/rich", rx.url()), "payload_format": "SlackRich"},
                ]}),
    )
    .await
    .expect(201);
    let policy = r.json();
    let pid = policy["id"].as_i64().unwrap();
    assert!(policy["targets"][1].get("payload_format").is_none());
    assert_eq!(policy["targets"][2]["payload_format"], "SlackRich");
    // a slack target naming Harbor's formats is refused as Harbor does
    let r = post(
        &format!("{base}/api/v2.0/projects/prj/webhook/policies"),
        &json!({"name": "x", "event_types": ["PUSH_ARTIFACT"],
                "targets": [{"type": "slack", "address": rx.url(), "payload_format": "Default"}]}),
    )
    .await
    .expect(400);
    assert!(
        r.error_message()
            .contains("set payload format is not allowed for slack")
    );

    let work = tempfile::tempdir().unwrap();
    let image = oci::build_image(&work.path().join("img"), "v1", &[512]);
    RegistryClient::new(&base)
        .push_image("prj/app", "v1", &image)
        .await;
    let r = client()
        .post(format!("{base}/api/v1/events/scan"))
        .bearer_auth("side-token-0123456789")
        .json(&json!({"repository": "prj/app", "tag": "v1", "status": "Stopped", "error": "stopped by admin"}))
        .send()
        .await
        .unwrap();
    let r = ApiResp::read(r).await.expect(201);
    assert_eq!(r.json()["type"], "SCANNING_STOPPED");
    let got = rx.wait_for(3, SOON).await;
    let by = |p: &str| got.iter().find(|r| r.path == p).unwrap().json();
    let ce = by("/ce");
    assert_eq!(ce["type"], "harbor.scan.stopped");
    assert_eq!(ce["data"]["scan"]["scan_type"], "vulnerability");
    let overview = &ce["data"]["resources"][0]["scan_overview"]["application/vnd.security.vulnerability.report; version=1.1"];
    assert_eq!(overview["scan_status"], "Stopped");
    assert_eq!(ce["data"]["resources"][0]["tag"], "v1");
    assert!(
        ce["data"]["repository"].get("date_created").is_none(),
        "none on scan events"
    );
    let slack = by("/slack");
    assert_eq!(
        slack["blocks"][1]["text"]["text"],
        "*event_type:* SCANNING_STOPPED"
    );
    let rich = by("/rich");
    assert_eq!(rich["blocks"][0]["type"], "header");
    // executions: SLACK for both slack targets
    let ex = wait_until("three executions", SOON, || async {
        let r = get(&format!(
            "{base}/api/v2.0/projects/prj/webhook/policies/{pid}/executions"
        ))
        .await;
        (r.header("x-total-count") == Some("3")).then(|| r.json())
    })
    .await;
    let mut vendors: Vec<&str> = ex
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["vendor_type"].as_str().unwrap())
        .collect();
    vendors.sort();
    assert_eq!(vendors, ["SLACK", "SLACK", "WEBHOOK"]);
    let r = get(&format!(
        "{base}/api/v2.0/projects/prj/webhook/policies/{pid}/executions?q=vendor_type%3DSLACK"
    ))
    .await;
    assert_eq!(r.header("x-total-count"), Some("2"));
    let jobs = get(&format!(
        "{base}/api/v2.0/projects/prj/webhook/jobs?policy_id={pid}"
    ))
    .await
    .expect(200)
    .json();
    let mut notify: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["notify_type"].as_str().unwrap())
        .collect();
    notify.sort();
    assert_eq!(notify, ["http", "slack", "slack"]);
    get(&format!("{base}/api/v2.0/projects/prj/webhook/jobs"))
        .await
        .expect(422);

    // an sbom scan: sbom_overview, scan_type sbom
    let r = client()
        .post(format!("{base}/api/v1/events/scan"))
        .bearer_auth("side-token-0123456789")
        .json(
            &json!({"repository": "prj/app", "tag": "v1", "status": "Success", "scan_type": "sbom",
                      "sbom_digest": format!("sha256:{}", "a".repeat(64))}),
        )
        .send()
        .await
        .unwrap();
    ApiResp::read(r).await.expect(201);
    let got = rx.wait_for(6, SOON).await;
    let ce = got
        .iter()
        .filter(|r| r.path == "/ce")
        .nth(1)
        .unwrap()
        .json();
    assert_eq!(ce["type"], "harbor.scan.completed");
    assert_eq!(ce["data"]["scan"]["scan_type"], "sbom");
    let sbom = &ce["data"]["resources"][0]["sbom_overview"];
    assert_eq!(sbom["scan_status"], "Success");
    assert_eq!(sbom["sbom_digest"], format!("sha256:{}", "a".repeat(64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_carry_date_created_and_per_manifest_counts_every_manifest() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(FAST)
        .yaml("events: {multi_platform: per_manifest}")
        .start()
        .await;
    let base = wharf.url();
    let rx = Receiver::start().await;
    post(
        &format!("{base}/api/v2.0/projects/prj/webhook/policies"),
        &json!({"name": "p", "enabled": true, "event_types": ["PUSH_ARTIFACT"], "targets": [{"address": rx.url()}]}),
    )
    .await
    .expect(201);
    let before = chrono::Utc::now().timestamp() - 1;
    let work = tempfile::tempdir().unwrap();
    let index = oci::build_index(&work.path().join("src"), "multi", &[1024, 512]);
    Skopeo::new()
        .copy_ok(
            &index.oci_ref(),
            &format!("docker://{}/prj/multi:1.0", wharf.host()),
            &["--all"],
        )
        .await;
    // Harbor's behaviour: the two platform manifests and the index, three events
    let got = rx.wait_for(3, SOON).await;
    rx.expect_no_more_than(3, Duration::from_millis(800)).await;
    let mut tags: Vec<String> = got
        .iter()
        .map(|r| {
            r.json()["event_data"]["resources"][0]["tag"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    tags.sort();
    let mut want: Vec<String> = index
        .platforms
        .iter()
        .map(|p| p.manifest.digest.clone())
        .collect();
    want.push("1.0".into());
    want.sort();
    assert_eq!(tags, want, "a platform manifest's tag is its digest");
    for r in &got {
        let created = r.json()["event_data"]["repository"]["date_created"]
            .as_i64()
            .unwrap();
        assert!(
            created >= before && created <= chrono::Utc::now().timestamp(),
            "{created}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_the_component_that_is_down_and_login_checks_credentials() {
    // a registry that is not there
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let wharf = Wharf::builder(&format!("http://127.0.0.1:{port}"))
        .start()
        .await;
    let base = wharf.url();
    let r = call(
        reqwest::Method::GET,
        &format!("{base}/api/v2.0/health"),
        None,
        false,
        &[],
    )
    .await
    .expect(200);
    let h = r.json();
    assert_eq!(h["status"], "unhealthy");
    assert_eq!(h["components"][0]["name"], "registry");
    assert_eq!(h["components"][0]["status"], "unhealthy");
    assert!(h["components"][0]["error"].is_string());
    assert_eq!(
        h["components"][1],
        json!({"name": "store", "status": "healthy"})
    );
    // harbor-cli login: /users/current, 401 for bad credentials
    let r = client()
        .get(format!("{base}/api/v2.0/users/current"))
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = get(&format!("{base}/api/v2.0/users/current"))
        .await
        .expect(200);
    assert_eq!(
        (
            r.json()["user_id"].clone(),
            r.json()["sysadmin_flag"].clone()
        ),
        (json!(1), json!(true))
    );
    // its fallback: /projects?page=1&page_size=1 and /ping both 2xx
    get(&format!("{base}/api/v2.0/projects?page=1&page_size=1"))
        .await
        .expect(200);
    let r = call(
        reqwest::Method::GET,
        &format!("{base}/api/v2.0/ping"),
        None,
        false,
        &[],
    )
    .await
    .expect(200);
    assert_eq!(r.text, "Pong");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    // an unknown API path: Harbor's 404
    let r = get(&format!("{base}/api/v2.0/nothing")).await.expect(404);
    assert_eq!(r.error_message(), "path /api/v2.0/nothing was not found");
}
