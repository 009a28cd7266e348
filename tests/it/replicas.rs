//! Several wharf replicas on one PostgreSQL store behave as one wharf: a real registry, real
//! skopeo, a real receiver, three replicas (in-process, or the real binary where one must be
//! killed with SIGKILL), and the private PostgreSQL cluster of the test run.
//!
//! - a policy created through A is used by B and C; a push through B and a pull through C make
//!   one event each; every replica shows the same event log and executions;
//! - the notification switch flipped through A is obeyed by C;
//! - SIGKILL of two replicas during a burst of pushes, with the receiver down, loses nothing:
//!   the third delivers every event once the receiver is up (leases taken over);
//! - two pushes released at the same instant through two replicas cannot exceed a quota, and
//!   usage is the same seen from every replica;
//! - a multi-platform push whose platform manifests and index go through different replicas is
//!   one event; tag attribution and index-pull de-duplication hold across replicas;
//! - bad `store.url`s: a clear error naming the key, never the password.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::api::ApiResp as Resp;
use crate::common::oci::{self, OciImage};
use crate::common::postgres as pgc;
use crate::common::wharf::ADMIN_PASSWORD;
use crate::common::{
    Receiver, Registry, RegistryClient, Skopeo, Wharf, WharfBuilder, client, wait_until,
};

/// Loopback targets, fast retries, and a short claim lease (a killed replica's deliveries are
/// taken over quickly).
const FAST: &str = r#"
notification:
  allowed_target_networks: ["127.0.0.0/8"]
  webhook_job_http_client_timeout: 1
  webhook_job_max_retry: 1000
  backoff: {initial: 100ms, multiplier: 2.0, max: 300ms, jitter: 0.1}
  breaker_failures: 1000
store:
  claim_lease: 6s
"#;

const SOON: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(1500);

fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wharf-it-replicas-")
        .tempdir()
        .unwrap()
}

/// A builder for one replica of the store at `url`.
fn replica(registry: &Registry, url: &str) -> WharfBuilder {
    Wharf::builder(&registry.url())
        .yaml(FAST)
        .yaml(&format!("store: {{url: \"{url}\"}}\n"))
}

async fn api(method: reqwest::Method, base: &str, path: &str, body: Option<&Value>) -> Resp {
    let mut rb = client()
        .request(method, format!("{base}{path}"))
        .basic_auth("admin", Some(ADMIN_PASSWORD));
    if let Some(b) = body {
        rb = rb.json(b);
    }
    Resp::read(rb.send().await.unwrap()).await
}

const POLICIES: &str = "/api/v2.0/projects/prj/webhook/policies";

async fn create_policy(base: &str, rx: &Receiver, types: &[&str]) -> i64 {
    let body = json!({
        "name": "replicas",
        "enabled": true,
        "event_types": types,
        "targets": [{"type": "http", "address": format!("{}/hook", rx.url())}],
    });
    api(reqwest::Method::POST, base, POLICIES, Some(&body))
        .await
        .expect(201)
        .json()["id"]
        .as_i64()
        .unwrap()
}

/// The event log (published events) as one replica shows it.
async fn events(base: &str, query: &str) -> Vec<Value> {
    api(
        reqwest::Method::GET,
        base,
        &format!("/api/v1/events?limit=1000&{query}"),
        None,
    )
    .await
    .expect(200)
    .json()
    .as_array()
    .unwrap()
    .clone()
}

fn types(got: &[crate::common::Recorded]) -> Vec<String> {
    let mut v: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

// 1 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_policies_events_and_the_switch() {
    let registry = Registry::start().await;
    let url = pgc::database().await;
    let a = replica(&registry, &url).start().await;
    let b = replica(&registry, &url).start().await;
    let c = replica(&registry, &url).start().await;
    let rx = Receiver::start().await;
    let pid = create_policy(&a.url(), &rx, &["PUSH_ARTIFACT", "PULL_ARTIFACT"]).await;
    // the policy exists on every replica
    for r in [&b, &c] {
        let list = api(reqwest::Method::GET, &r.url(), POLICIES, None)
            .await
            .expect(200)
            .json();
        assert_eq!(list[0]["id"], pid, "{list}");
    }
    let work = work_dir();
    let image = oci::build_image(&work.path().join("img"), "v1", &[4096]);
    let skopeo = Skopeo::new();
    skopeo
        .copy_ok(
            &image.oci_ref(),
            &format!("docker://{}/prj/app:v1", b.host()),
            &[],
        )
        .await;
    let out = work.path().join("pulled");
    skopeo
        .copy_ok(
            &format!("docker://{}/prj/app:v1", c.host()),
            &format!("oci:{}:v1", out.display()),
            &[],
        )
        .await;
    let got = rx.wait_for(2, SOON).await;
    rx.expect_no_more_than(2, QUIET).await;
    assert_eq!(types(&got), ["PULL_ARTIFACT", "PUSH_ARTIFACT"]);
    let ids: HashSet<&str> = got.iter().filter_map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 2);
    // every replica shows the same event log and the same executions
    for r in [&a, &b, &c] {
        let log = events(&r.url(), "").await;
        assert_eq!(log.len(), 2, "{}: {log:#?}", r.url());
        let ex = api(
            reqwest::Method::GET,
            &r.url(),
            &format!("{POLICIES}/{pid}/executions"),
            None,
        )
        .await
        .expect(200)
        .json();
        assert_eq!(ex.as_array().unwrap().len(), 2, "{ex}");
    }

    // notifications switched off through A: C obeys within the policy watch
    api(
        reqwest::Method::PUT,
        &a.url(),
        "/api/v2.0/configurations",
        Some(&json!({"notification_enable": false})),
    )
    .await
    .expect(200);
    tokio::time::sleep(wharf::POLICY_WATCH * 2 + Duration::from_millis(200)).await;
    assert_eq!(notification_switch(&c.url()).await, false);
    skopeo
        .copy_ok(
            &image.oci_ref(),
            &format!("docker://{}/prj/app:v2", c.host()),
            &[],
        )
        .await;
    rx.expect_no_more_than(2, QUIET).await;
    // on again through B: C delivers the next push
    api(
        reqwest::Method::PUT,
        &b.url(),
        "/api/v2.0/configurations",
        Some(&json!({"notification_enable": true})),
    )
    .await
    .expect(200);
    tokio::time::sleep(wharf::POLICY_WATCH * 2 + Duration::from_millis(200)).await;
    skopeo
        .copy_ok(
            &image.oci_ref(),
            &format!("docker://{}/prj/app:v3", c.host()),
            &[],
        )
        .await;
    let got = rx.wait_for(3, SOON).await;
    assert_eq!(
        got[2].json()["event_data"]["resources"][0]["tag"],
        "v3",
        "{:?}",
        got[2].json()
    );
    // a policy deleted through C is gone for A's next event
    api(
        reqwest::Method::DELETE,
        &c.url(),
        &format!("{POLICIES}/{pid}"),
        None,
    )
    .await
    .expect(200);
    tokio::time::sleep(wharf::POLICY_WATCH * 2 + Duration::from_millis(200)).await;
    skopeo
        .copy_ok(
            &image.oci_ref(),
            &format!("docker://{}/prj/app:v4", a.host()),
            &[],
        )
        .await;
    rx.expect_no_more_than(3, QUIET).await;
    for r in [a, b, c] {
        r.shutdown().await;
    }
}

/// `notification_enable` as the replica at `base` reports it.
async fn notification_switch(base: &str) -> serde_json::Value {
    api(reqwest::Method::GET, base, "/api/v2.0/configurations", None)
        .await
        .expect(200)
        .json()["notification_enable"]["value"]
        .clone()
}

/// The notification switch flipped by another replica while this one cannot read it (here:
/// the settings table renamed away in the same transaction as the flip, for two ticks of the
/// watch) is read again at the next tick, not left stale until the next policy change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_that_could_not_be_read_is_read_again() {
    let registry = Registry::start().await;
    let url = pgc::database().await;
    let c = replica(&registry, &url).start().await;
    assert_eq!(notification_switch(&c.url()).await, true);
    let db = pgc::db_name(&url);
    let generation = || c.app().store.policy_cache().loading();
    let before = generation();
    // another replica switches notifications off (as `set_notification_enabled` does); the
    // switch cannot be read for a moment
    pgc::cluster()
        .execute(
            &db,
            "BEGIN;
             INSERT INTO meta (key, n) VALUES ('policy_version', 1)
               ON CONFLICT (key) DO UPDATE SET n = meta.n + 1;
             INSERT INTO settings (key, value) VALUES ('notification_enable', 'false')
               ON CONFLICT (key) DO UPDATE SET value = excluded.value;
             ALTER TABLE settings RENAME TO settings_away;
             COMMIT;",
        )
        .await;
    tokio::time::sleep(wharf::POLICY_WATCH * 2 + Duration::from_millis(200)).await;
    // the cache was dropped once for the new version, not at every tick that failed to read
    assert_eq!(generation(), before + 1);
    pgc::cluster()
        .execute(&db, "ALTER TABLE settings_away RENAME TO settings")
        .await;
    tokio::time::sleep(wharf::POLICY_WATCH * 2 + Duration::from_millis(200)).await;
    // before: the version counted as seen although the read failed — on until the next change
    assert_eq!(notification_switch(&c.url()).await, false);
    c.shutdown().await;
}

// 2 ------------------------------------------------------------------------------------------

/// Push `manifest` of `image` (blobs uploaded first) as `repo:tag` through `base`; the status.
async fn put(base: &str, repo: &str, tag: &str, image: &OciImage) -> u16 {
    let manifest = std::fs::read(image.blob_path(&image.digest)).unwrap();
    let r = RegistryClient::new(base)
        .request(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
        .header("content-type", image.media_type)
        .body(manifest)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    r.map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn upload_blobs(base: &str, repo: &str, image: &OciImage) {
    let rc = RegistryClient::new(base);
    for b in image.layer_and_config_blobs() {
        rc.upload_blob(repo, std::fs::read(image.blob_path(&b.digest)).unwrap())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_two_replicas_during_a_burst_loses_no_event() {
    let registry = Registry::start().await;
    let url = pgc::database().await;
    let mut a = replica(&registry, &url).spawn().await;
    let mut b = replica(&registry, &url).spawn().await;
    let c = replica(&registry, &url).spawn().await;
    // the receiver is down: nothing listens on its port yet
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let body = json!({
        "name": "durable",
        "enabled": true,
        "event_types": ["PUSH_ARTIFACT"],
        "targets": [{"type": "http", "address": format!("http://127.0.0.1:{port}/hook")}],
    });
    api(reqwest::Method::POST, &c.url(), POLICIES, Some(&body))
        .await
        .expect(201);
    let work = work_dir();
    let image = oci::build_image(&work.path().join("img"), "src", &[2048]);
    upload_blobs(&c.url(), "prj/app", &image).await;
    // a burst through A and B; both are killed while it runs
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let base = if i % 2 == 0 { a.url() } else { b.url() };
        let (image, done) = (image.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20 * i as u64)).await;
            let tag = format!("t{i:02}");
            let status = put(&base, "prj/app", &tag, &image).await;
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (tag, status)
        }));
    }
    wait_until("half the burst answered", SOON, || {
        let n = done.load(std::sync::atomic::Ordering::SeqCst);
        async move { (n >= 15).then_some(()) }
    })
    .await;
    a.kill9();
    b.kill9();
    let mut acknowledged = HashSet::new();
    for t in tasks {
        let (tag, status) = t.await.unwrap();
        if status == 201 {
            acknowledged.insert(tag);
        }
    }
    assert!(
        acknowledged.len() >= 5,
        "some pushes succeeded before the kill: {acknowledged:?}"
    );
    // the receiver comes up; C delivers every acknowledged push, including those A and B had
    // claimed (after their leases expire)
    let rx = Receiver::start_on(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
    let delivered = wait_until(
        "every acknowledged push delivered",
        Duration::from_secs(40),
        || {
            let got = rx.requests();
            let acknowledged = acknowledged.clone();
            async move {
                let tags: HashSet<String> = got
                    .iter()
                    .map(|r| {
                        r.json()["event_data"]["resources"][0]["tag"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect();
                acknowledged.is_subset(&tags).then_some(got)
            }
        },
    )
    .await;
    // at least once, and with one event id per push
    let ids: HashSet<&str> = delivered
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    assert!(ids.len() >= acknowledged.len());
    drop(c);
}

// 3 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_pushes_through_two_replicas_cannot_exceed_the_quota() {
    let registry = Registry::start().await;
    let url = pgc::database().await;
    let work = work_dir();
    let x = oci::build_image(&work.path().join("x"), "v1", &[64 * 1024]);
    let y = oci::build_image(&work.path().join("y"), "v1", &[64 * 1024]);
    let size = |i: &OciImage| -> u64 { i.layer_and_config_blobs().iter().map(|b| b.size).sum() };
    let limit = size(&x) + size(&y) / 2;
    let quota = format!("projects: {{prj: {{storage_limit: {limit}}}}}\n");
    let a = replica(&registry, &url).yaml(&quota).start().await;
    let b = replica(&registry, &url).yaml(&quota).start().await;
    let c = replica(&registry, &url).yaml(&quota).start().await;
    upload_blobs(&a.url(), "prj/x", &x).await;
    upload_blobs(&b.url(), "prj/y", &y).await;
    for round in 0..3 {
        let (ua, ub, tag) = (a.url(), b.url(), format!("r{round}"));
        let (ra, rb) = tokio::join!(put(&ua, "prj/x", &tag, &x), put(&ub, "prj/y", &tag, &y));
        let mut statuses = [ra, rb];
        statuses.sort();
        if round == 0 {
            assert_eq!(statuses, [201, 403], "exactly one fits");
        } else {
            // the winner's content is counted: re-pushing it is free, the other still does not fit
            assert!(statuses.contains(&403), "{statuses:?}");
        }
    }
    // usage is the same seen from every replica, and within the limit
    let mut seen = Vec::new();
    for r in [&a, &b, &c] {
        let q = api(
            reqwest::Method::GET,
            &r.url(),
            "/api/v1/projects/prj/quota",
            None,
        )
        .await
        .expect(200)
        .json();
        seen.push(q["usage"].as_u64().unwrap());
    }
    assert!(seen.iter().all(|u| *u == seen[0]), "{seen:?}");
    assert!(seen[0] <= limit);
    assert!(seen[0] == size(&x) || seen[0] == size(&y), "{seen:?}");
    for r in [a, b, c] {
        r.shutdown().await;
    }
}

/// A push's reservation that loses a deadlock to another transaction (here: a trigger raises
/// PostgreSQL's `deadlock_detected` on its first try, as the chosen victim of a real one sees
/// it — e.g. a group commit holding another project's row) is made again: a push that does not
/// fit is still refused, not let in unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_that_loses_a_deadlock_is_made_again() {
    let registry = Registry::start().await;
    let url = pgc::database().await;
    let work = work_dir();
    let x = oci::build_image(&work.path().join("x"), "v1", &[64 * 1024]);
    let size: u64 = x.layer_and_config_blobs().iter().map(|b| b.size).sum();
    let a = replica(&registry, &url)
        .yaml(&format!(
            "projects: {{prj: {{storage_limit: {}}}}}\n",
            size / 2
        ))
        .start()
        .await;
    pgc::cluster()
        .execute(
            &pgc::db_name(&url),
            "CREATE SEQUENCE reservation_tries;
             CREATE FUNCTION lose_a_deadlock_once() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF nextval('reservation_tries') = 1 THEN
                 RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER lose_a_deadlock_once BEFORE INSERT ON quota_projects
               FOR EACH ROW EXECUTE FUNCTION lose_a_deadlock_once();",
        )
        .await;
    upload_blobs(&a.url(), "prj/x", &x).await;
    // before: the reservation's error let the push in unchecked (201), past the limit
    assert_eq!(put(&a.url(), "prj/x", "v1", &x).await, 403);
    let tries = pgc::cluster()
        .int(
            &pgc::db_name(&url),
            "SELECT last_value FROM reservation_tries",
        )
        .await;
    assert_eq!(tries, 2, "rolled back once, made again");
    a.shutdown().await;
}

/// A reservation's lapse counts from when it is written, not from when its push asked for it:
/// one that waited for the project's row (another push's transaction, here a session holding
/// it for 2 s) still has its whole lapse ahead of it (`upstream.response_timeout` + 3 ×
/// `store.statement_timeout` + 60 s: 270 s with the defaults).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_that_waited_has_its_whole_lapse() {
    let registry = Registry::start().await;
    let url = pgc::database().await;
    let work = work_dir();
    let x = oci::build_image(&work.path().join("x"), "v1", &[1024]);
    let a = replica(&registry, &url)
        .yaml("projects: {prj: {storage_limit: 1MiB}}\n")
        .start()
        .await;
    let db = pgc::db_name(&url);
    pgc::cluster()
        .execute(
            &db,
            "CREATE TABLE lapses (ms BIGINT);
             CREATE FUNCTION note_lapse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               INSERT INTO lapses VALUES
                 (NEW.expires_at - (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
               RETURN NEW;
             END $$;
             CREATE TRIGGER note_lapse BEFORE INSERT ON quota_reservations
               FOR EACH ROW EXECUTE FUNCTION note_lapse();
             INSERT INTO quota_projects (project, usage, warned) VALUES ('prj', 0, 0)
               ON CONFLICT (project) DO NOTHING;",
        )
        .await;
    upload_blobs(&a.url(), "prj/x", &x).await;
    let (holder, task) = pgc::cluster().session(&db).await;
    holder
        .batch_execute("BEGIN; SELECT 1 FROM quota_projects WHERE project = 'prj' FOR UPDATE")
        .await
        .unwrap();
    let push = {
        let (base, x) = (a.url(), x.clone());
        tokio::spawn(async move { put(&base, "prj/x", "v1", &x).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(push.await.unwrap(), 201);
    let lapse: i64 = holder
        .query_one("SELECT ms FROM lapses", &[])
        .await
        .unwrap()
        .get(0);
    // before: counted from before the wait, 2 s of it gone when written
    assert!(lapse > 270_000 - 500, "{lapse} ms left");
    drop(holder);
    let _ = task.await;
    a.shutdown().await;
}

// 4 ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_per_operation_whichever_replica_saw_it() {
    let registry = Registry::start().await;
    let url = pgc::database().await;
    let a = replica(&registry, &url)
        .yaml("events: {index_window: 5s}\n")
        .start()
        .await;
    let b = replica(&registry, &url)
        .yaml("events: {index_window: 5s}\n")
        .start()
        .await;
    let c = replica(&registry, &url)
        .yaml("events: {index_window: 5s}\n")
        .start()
        .await;
    let rx = Receiver::start().await;
    create_policy(&a.url(), &rx, &["PUSH_ARTIFACT", "PULL_ARTIFACT"]).await;
    let work = work_dir();
    let index = oci::build_index(&work.path().join("multi"), "v1", &[1024]);
    // platform manifests through A and B (by digest), the index through C by tag
    let platforms = index.platform_manifests_if_index();
    assert_eq!(platforms.len(), 2);
    for (i, m) in platforms.iter().enumerate() {
        let through = if i == 0 { a.url() } else { b.url() };
        let rc = RegistryClient::new(&through);
        let pm = m.digest.clone();
        // the platform manifest's own blobs
        let body = std::fs::read(index.blob_path(&pm)).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let mut blobs = vec![v["config"]["digest"].as_str().unwrap().to_string()];
        for l in v["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
        for d in blobs {
            rc.upload_blob("prj/multi", std::fs::read(index.blob_path(&d)).unwrap())
                .await;
        }
        rc.put_manifest("prj/multi", &pm, oci::MANIFEST_V1, body)
            .await;
    }
    let top = std::fs::read(index.blob_path(&index.digest)).unwrap();
    RegistryClient::new(&c.url())
        .put_manifest("prj/multi", "v1", index.media_type, top)
        .await;
    let got = rx.wait_for(1, SOON).await;
    // the held platform events are absorbed by the index, whichever replica holds them
    tokio::time::sleep(Duration::from_secs(6)).await;
    rx.expect_no_more_than(1, Duration::from_millis(500)).await;
    assert_eq!(got[0].json()["type"], "PUSH_ARTIFACT");
    assert_eq!(got[0].json()["event_data"]["resources"][0]["tag"], "v1");

    // a pull spread over replicas: HEAD by tag through A, GET by digest through B — one event,
    // with the tag A saw
    let image = oci::build_image(&work.path().join("single"), "s1", &[512]);
    RegistryClient::new(&a.url())
        .push_image("prj/single", "s1", &image)
        .await;
    let _ = rx.wait_for(2, SOON).await;
    let head = client()
        .head(format!("{}/v2/prj/single/manifests/s1", a.url()))
        .header("accept", oci::MANIFEST_V1)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let get = client()
        .get(format!(
            "{}/v2/prj/single/manifests/{}",
            b.url(),
            image.digest
        ))
        .header("accept", oci::MANIFEST_V1)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let _ = get.bytes().await.unwrap();
    let got = rx.wait_for(3, SOON).await;
    let pull = got[2].json();
    assert_eq!(pull["type"], "PULL_ARTIFACT");
    assert_eq!(pull["event_data"]["resources"][0]["tag"], "s1", "{pull}");

    // an index pulled through A, its platform manifest through C: one pull event
    let accept = "application/vnd.oci.image.index.v1+json";
    let idx = client()
        .get(format!("{}/v2/prj/multi/manifests/v1", a.url()))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    assert_eq!(idx.status(), 200);
    let _ = idx.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let child = client()
        .get(format!(
            "{}/v2/prj/multi/manifests/{}",
            c.url(),
            platforms[0].digest
        ))
        .header("accept", oci::MANIFEST_V1)
        .send()
        .await
        .unwrap();
    assert_eq!(child.status(), 200);
    let _ = child.bytes().await.unwrap();
    let got = rx.wait_for(4, SOON).await;
    rx.expect_no_more_than(4, QUIET).await;
    assert_eq!(got[3].json()["type"], "PULL_ARTIFACT");
    assert_eq!(got[3].json()["event_data"]["resources"][0]["tag"], "v1");
    for r in [a, b, c] {
        r.shutdown().await;
    }
}

// 5 ------------------------------------------------------------------------------------------
// bad store.url: clear errors naming the key, secrets never shown

async fn wharf_cmd(args: &[&str]) -> crate::common::CmdOutput {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args)
        .env_remove("WHARF_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    crate::common::cmd::run(cmd, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_store_urls_are_clear_errors_naming_the_key() {
    let registry = Registry::start().await;
    let work = work_dir();
    let good = pgc::database().await;
    let cluster = pgc::cluster();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let wrong_password = good.replace(pgc::PASSWORD, "not-the-Secret-42");
    let unreachable = good.replace(&format!(":{}/", cluster.port), &format!(":{closed}/"));
    for (name, url, expect) in [
        ("malformed", "postgres//nohost".to_string(), "store.url"),
        (
            "no database",
            format!("postgres://wharf@127.0.0.1:{}", cluster.port),
            "one database",
        ),
        (
            "wrong password",
            wrong_password,
            "password authentication failed",
        ),
        ("unreachable", unreachable, "store.url"),
    ] {
        let config = work.path().join(format!("{}.yaml", name.replace(' ', "-")));
        std::fs::write(
            &config,
            format!(
                "upstream: {{registry: \"{}\"}}\nadmin_password: {ADMIN_PASSWORD}\ndata_dir: {}\nstore: {{url: \"{url}\", connect_timeout: 3s}}\nlisten: 127.0.0.1:0\n",
                registry.url(),
                work.path().join("data").display()
            ),
        )
        .unwrap();
        let path = config.to_str().unwrap();
        for args in [
            vec!["check-config", "--config", path],
            vec!["serve", "--config", path],
        ] {
            let out = wharf_cmd(&args).await;
            assert!(!out.success(), "{name} {args:?} must fail:\n{out}");
            assert!(
                out.stderr.contains("store.url"),
                "{name} {args:?}: the key is named:\n{out}"
            );
            assert!(
                out.stderr.contains(expect),
                "{name} {args:?}: {expect:?}:\n{out}"
            );
            for secret in [pgc::PASSWORD, "not-the-Secret-42"] {
                assert!(
                    !out.stderr.contains(secret) && !out.stdout.contains(secret),
                    "{name} {args:?}: a password was printed:\n{out}"
                );
            }
            assert!(!out.stderr.contains("panicked"), "{out}");
            // the cause once: errors that name their cause and also return it as their source
            // had it printed three times
            if name == "unreachable" {
                assert_eq!(
                    out.stderr.matches("Connection refused").count(),
                    1,
                    "{name} {args:?}: said once:\n{out}"
                );
            }
        }
    }
    // the good one: check-config connects, prints the URL masked, and says the schema state
    let config = work.path().join("good.yaml");
    std::fs::write(
        &config,
        format!(
            "upstream: {{registry: \"{}\"}}\nadmin_password: {ADMIN_PASSWORD}\nstore: {{url: \"{good}\"}}\n",
            registry.url()
        ),
    )
    .unwrap();
    let out = wharf_cmd(&["check-config", "--config", config.to_str().unwrap()]).await;
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("postgres://wharf:***@"), "{out}");
    assert!(!out.stdout.contains(pgc::PASSWORD), "{out}");
    assert!(out.stderr.contains("empty database"), "{out}");
    // migrate alone, then check-config sees the version
    let out = wharf_cmd(&["migrate", "--config", config.to_str().unwrap()]).await;
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains(&format!(
            "schema version {}",
            wharf::store::schema::latest()
        )),
        "{out}"
    );
    let out = wharf_cmd(&["check-config", "--config", config.to_str().unwrap()]).await;
    assert!(out.stderr.contains("schema version"), "{out}");
    // the password from a file instead of the URL
    let pw = pgc::write_file(work.path(), "pw", &format!("{}\n", pgc::PASSWORD));
    let no_pw = good.replace(&format!(":{}@", pgc::PASSWORD), "@");
    std::fs::write(
        &config,
        format!(
            "upstream: {{registry: \"{}\"}}\nadmin_password: {ADMIN_PASSWORD}\nstore: {{url: \"{no_pw}\", password_file: {}}}\n",
            registry.url(),
            pw.display()
        ),
    )
    .unwrap();
    let out = wharf_cmd(&["check-config", "--config", config.to_str().unwrap()]).await;
    assert!(out.success(), "{out}");
}

// 6 ------------------------------------------------------------------------------------------

/// `wharf store copy`: an embedded store with a policy, an undelivered event and knowledge
/// moves into PostgreSQL; a wharf on PostgreSQL then delivers the event and knows the usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_an_embedded_store_into_postgres() {
    let registry = Registry::start().await;
    let work = work_dir();
    let data = work.path().join("data");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let single = Wharf::builder(&registry.url())
        .yaml(FAST)
        .yaml(&format!("data_dir: {}\n", data.display()))
        .yaml("projects: {prj: {storage_limit: 10MiB}}\n")
        .start()
        .await;
    let body = json!({
        "name": "moved",
        "enabled": true,
        "event_types": ["PUSH_ARTIFACT"],
        "targets": [{"type": "http", "address": format!("http://127.0.0.1:{port}/hook"), "auth_header": "Bearer kept"}],
    });
    let pid = api(reqwest::Method::POST, &single.url(), POLICIES, Some(&body))
        .await
        .expect(201)
        .json()["id"]
        .as_i64()
        .unwrap();
    let image = oci::build_image(&work.path().join("img"), "v1", &[2048]);
    RegistryClient::new(&single.url())
        .push_image("prj/app", "v1", &image)
        .await;
    let usage_before = api(
        reqwest::Method::GET,
        &single.url(),
        "/api/v1/projects/prj/quota",
        None,
    )
    .await
    .expect(200)
    .json()["usage"]
        .clone();
    // the event log as the embedded store keeps it (ids as 16 bytes, a sha256 digest as 32)
    let log = |url: String| async move {
        let events = api(reqwest::Method::GET, &url, "/api/v1/events?all=true", None)
            .await
            .expect(200)
            .json();
        let mut kept: Vec<(String, String, String)> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (field("id"), field("digest"), field("resource_url"))
            })
            .collect();
        kept.sort();
        kept
    };
    let log_before = log(single.url()).await;
    assert!(
        log_before.iter().any(|(_, d, _)| d.starts_with("sha256:")),
        "{log_before:?}"
    );
    single.shutdown().await;

    let url = pgc::database().await;
    let config = work.path().join("wharf.yaml");
    std::fs::write(
        &config,
        format!(
            "upstream: {{registry: \"{}\"}}\nadmin_password: {ADMIN_PASSWORD}\ndata_dir: {}\n",
            registry.url(),
            data.display()
        ),
    )
    .unwrap();
    let path = config.to_str().unwrap();
    // the password from a file (a mounted secret), not in --to
    let pw = pgc::write_file(work.path(), "pw", &format!("{}\n", pgc::PASSWORD));
    let no_pw = url.replace(&format!(":{}@", pgc::PASSWORD), "@");
    assert_ne!(no_pw, url);
    let (to, file) = (
        ["--to", no_pw.as_str()],
        ["--password-file", pw.to_str().unwrap()],
    );
    let out = wharf_cmd(&[&["store", "copy", "--config", path][..], &to, &file].concat()).await;
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("deliveries: 1"), "{out}");
    assert!(!out.stdout.contains(pgc::PASSWORD), "{out}");
    // a second copy into the now non-empty target is refused, unless told
    let out = wharf_cmd(&["store", "copy", "--config", path, "--to", &url]).await;
    assert!(!out.success());
    assert!(out.stderr.contains("--replace"), "{out}");
    // what the target held and the copy does not bring (a reservation, an attribution) goes
    // too: it would weigh on the copied project's quota or name a client's tag
    let db = pgc::db_name(&url);
    pgc::cluster()
        .execute(
            &db,
            "INSERT INTO quota_reservations (project, bytes, blobs, expires_at) VALUES ('prj', 9999999, '[]', 9999999999999);
             INSERT INTO recent (client, repository, digest, kind, value, at) VALUES ('c', 'prj/app', 'sha256:x', 'tag', 'old', 0);",
        )
        .await;
    let out = wharf_cmd(&["store", "copy", "--config", path, "--to", &url, "--replace"]).await;
    assert!(out.success(), "{out}");
    // a target holding only such rows (a replica started on it once) is not empty either
    let fresh = pgc::database().await;
    let migrated = wharf::store::Store::open(
        &wharf::config::StoreConfig {
            url: Some(wharf::config::DatabaseUrl::new(fresh.clone())),
            ..Default::default()
        },
        work.path(),
    )
    .await
    .unwrap();
    migrated.close().await;
    pgc::cluster()
        .execute(
            &pgc::db_name(&fresh),
            "INSERT INTO quota_reservations (project, bytes, blobs, expires_at) VALUES ('prj', 1, '[]', 9999999999999)",
        )
        .await;
    let out = wharf_cmd(&["store", "copy", "--config", path, "--to", &fresh]).await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("quota_reservations"), "{out}");
    for table in ["quota_reservations", "recent"] {
        let n = pgc::cluster()
            .int(&db, &format!("SELECT COUNT(*) FROM {table}"))
            .await;
        assert_eq!(n, 0, "{table} after --replace");
    }

    // a replica on PostgreSQL: same policy id, same usage, and the undelivered event goes out
    let pg = replica(&registry, &url)
        .yaml("projects: {prj: {storage_limit: 10MiB}}\n")
        .start()
        .await;
    let list = api(reqwest::Method::GET, &pg.url(), POLICIES, None)
        .await
        .expect(200)
        .json();
    assert_eq!(list[0]["id"], pid);
    let usage = api(
        reqwest::Method::GET,
        &pg.url(),
        "/api/v1/projects/prj/quota",
        None,
    )
    .await
    .expect(200)
    .json()["usage"]
        .clone();
    assert_eq!(usage, usage_before);
    assert_eq!(
        log(pg.url()).await,
        log_before,
        "the event log, ids and digests kept"
    );
    let rx = Receiver::start_on(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
    let got = rx.wait_for(1, SOON).await;
    assert_eq!(got[0].json()["type"], "PUSH_ARTIFACT");
    assert_eq!(got[0].header("authorization"), Some("Bearer kept"));
    // new ids continue after the copied ones
    let body = json!({"name": "second", "enabled": true, "event_types": ["PUSH_ARTIFACT"],
        "targets": [{"type": "http", "address": format!("http://127.0.0.1:{port}/hook2")}]});
    let second = api(reqwest::Method::POST, &pg.url(), POLICIES, Some(&body))
        .await
        .expect(201)
        .json()["id"]
        .as_i64()
        .unwrap();
    assert!(second > pid);
    pg.shutdown().await;
}

// 7 ------------------------------------------------------------------------------------------
// TLS to PostgreSQL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_as_sslmode_asks() {
    use wharf::config::{DatabaseUrl, StoreConfig};
    let cluster = pgc::cluster();
    let db = pgc::db_name(&pgc::database().await);
    let ca = cluster.ca_file.display().to_string();
    let other = cluster.other_ca_file.display().to_string();
    let open = |url: String| async move {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            url: Some(DatabaseUrl::new(url)),
            connect_timeout: Duration::from_secs(5),
            ..StoreConfig::default()
        };
        let s = wharf::store::Store::open(&cfg, dir.path()).await?;
        let ssl = s
            .read(|c| {
                c.int(
                    "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
            })
            .await;
        s.close().await;
        ssl.map(|v| v == Some(1))
    };
    // encrypted, certificate not checked
    assert!(
        open(cluster.url_with("127.0.0.1", &db, "sslmode=require"))
            .await
            .unwrap()
    );
    // chain checked against the private CA, and the name (localhost)
    assert!(
        open(cluster.url_with(
            "localhost",
            &db,
            &format!("sslmode=verify-full&sslrootcert={ca}")
        ))
        .await
        .unwrap()
    );
    // verify-ca: the chain only (the certificate does not name 127.0.0.1)
    assert!(
        open(cluster.url_with(
            "127.0.0.1",
            &db,
            &format!("sslmode=verify-ca&sslrootcert={ca}")
        ))
        .await
        .unwrap()
    );
    // verify-full: a name mismatch and an unknown CA are refused; require with an
    // sslrootcert is verify-ca (libpq's meaning): an unknown CA is refused
    for (host, mode, root) in [
        ("127.0.0.1", "verify-full", &ca),
        ("localhost", "verify-full", &other),
        ("127.0.0.1", "require", &other),
    ] {
        let err = open(cluster.url_with(host, &db, &format!("sslmode={mode}&sslrootcert={root}")))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("certificate") || msg.contains("Certificate"),
            "{host} {mode} {root}: {msg}"
        );
    }
    // require with the right CA: the chain is checked, not the name
    assert!(
        open(cluster.url_with(
            "127.0.0.1",
            &db,
            &format!("sslmode=require&sslrootcert={ca}")
        ))
        .await
        .unwrap()
    );
    // disable: plain TCP
    assert!(
        !open(cluster.url_with("127.0.0.1", &db, "sslmode=disable"))
            .await
            .unwrap()
    );
}

// 8 ------------------------------------------------------------------------------------------
// PostgreSQL down for a while

/// A TCP proxy in front of the test cluster that can be cut (every connection dropped, new
/// ones refused) and restored.
struct Cuttable {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<tokio::sync::Notify>,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hold: std::sync::Arc<tokio::sync::Notify>,
}

impl Cuttable {
    async fn start(target: u16) -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cut = std::sync::Arc::new(tokio::sync::Notify::new());
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hold = std::sync::Arc::new(tokio::sync::Notify::new());
        let (u, c, f, h) = (up.clone(), cut.clone(), frozen.clone(), hold.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !u.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let (c, h) = (c.clone(), h.clone());
                if f.load(std::sync::atomic::Ordering::SeqCst) {
                    // accepted, never answered, until the thaw closes it
                    tokio::spawn(async move {
                        c.notified().await;
                        drop(client);
                    });
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let cut = c.notified();
                    tokio::pin!(cut);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = &mut cut => {}
                        // frozen: both ends stay open, nothing moves, until the thaw
                        () = h.notified() => cut.await,
                    }
                });
            }
        });
        Cuttable {
            port,
            up,
            cut,
            frozen,
            hold,
        }
    }

    fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The server stops answering: bytes already in flight and new connections are held, not
    /// forwarded, nothing is closed (a frozen server, a network dropping packets).
    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
        self.hold.notify_waiters();
    }

    /// After a freeze: the held connections are closed (as a failover ends them), new ones
    /// reach the server again.
    fn thaw(&self) {
        self.frozen
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.notify_waiters();
    }
}

/// A registry, and a replica with `yaml` on a new database of the test cluster reached
/// through a proxy, one push delivered ([`replica_with_a_push`]).
async fn proxied_with_a_push(yaml: &str) -> (Registry, Cuttable, Pushed) {
    let registry = Registry::start().await;
    let proxy = Cuttable::start(pgc::cluster().port).await;
    let url = pgc::database_through(proxy.port).await;
    let pushed = replica_with_a_push(&registry, &url, yaml).await;
    (registry, proxy, pushed)
}

/// A registry, a replica with `yaml` on a new database of the test cluster with one push
/// delivered ([`replica_with_a_push`]), and a session of the test's own on that database.
async fn pushed_with_a_session(
    yaml: &str,
) -> (
    Registry,
    Pushed,
    (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
) {
    let registry = Registry::start().await;
    let url = pgc::database().await;
    let pushed = replica_with_a_push(&registry, &url, yaml).await;
    let session = pgc::cluster().session(&pgc::db_name(&url)).await;
    (registry, pushed, session)
}

/// A replica on the store at `url` (with `yaml`), a policy sending its pushes to `rx`, and
/// one push (`prj/app:v1`) delivered.
struct Pushed {
    w: Wharf,
    rx: Receiver,
    rc: RegistryClient,
    image: OciImage,
    _work: tempfile::TempDir,
}

async fn replica_with_a_push(registry: &Registry, url: &str, yaml: &str) -> Pushed {
    let w = replica(registry, url).yaml(yaml).start().await;
    let rx = Receiver::start().await;
    create_policy(&w.url(), &rx, &["PUSH_ARTIFACT"]).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("img"), "v1", &[1024]);
    let rc = RegistryClient::new(&w.url());
    rc.push_image("prj/app", "v1", &image).await;
    rx.wait_for(1, SOON).await;
    Pushed {
        w,
        rx,
        rc,
        image,
        _work: work,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_a_while_traffic_flows_and_wharf_reconnects() {
    let (_registry, proxy, pushed) = proxied_with_a_push("store: {connect_timeout: 2s}\n").await;
    let Pushed {
        w,
        rx,
        rc,
        image,
        _work,
    } = pushed;
    let ready = |base: String| async move {
        let r = client().get(format!("{base}/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(ready(w.url()).await.0, 200);

    proxy.down();
    // registry traffic still flows: a push is accepted, its event is logged and counted lost
    let started = std::time::Instant::now();
    rc.push_image("prj/app", "v2", &image).await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "a push waited {:?} for the database",
        started.elapsed()
    );
    let (status, body) = ready(w.url()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["store"]["reachable"], false, "{body}");
    let metrics = crate::common::metrics_text(&w.url()).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wharf_events_lost_total") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // back: wharf reconnects by itself
    proxy.restore();
    wait_until("ready again", SOON, || {
        let base = w.url();
        async move { (ready(base).await.0 == 200).then_some(()) }
    })
    .await;
    rc.push_image("prj/app", "v3", &image).await;
    let got = rx.wait_for(2, SOON).await;
    assert_eq!(got[1].json()["event_data"]["resources"][0]["tag"], "v3");
    w.shutdown().await;
}

/// Push `image` as `prj/app:<tag>`; how long it took (at most 30 s: then the test fails).
async fn timed_push(rc: &RegistryClient, image: &OciImage, tag: &str) -> Duration {
    let started = std::time::Instant::now();
    tokio::time::timeout(
        Duration::from_secs(30),
        rc.push_image("prj/app", tag, image),
    )
    .await
    .expect("the push is answered");
    started.elapsed()
}

/// What the lost-events and late-events counters of `base` read.
async fn lost_and_late(base: &str) -> (u64, u64) {
    let metrics = crate::common::metrics_text(base).await;
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    (
        value("wharf_events_lost_total"),
        value("wharf_events_late_total"),
    )
}

/// PostgreSQL refusing connections for a moment (restarting) while a client pulls: the pull's
/// event, written in the background, is tried again and lands once the server is back (here
/// after ~0.6 s, before the third try), nothing lost. (The first refused connection counted
/// the whole queue of background events lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_while_postgres_refuses_connections_for_a_moment_loses_no_event() {
    let (_registry, proxy, pushed) = proxied_with_a_push("").await;
    let Pushed { w, rc, _work, .. } = pushed;
    proxy.down();
    let r = rc
        .request(reqwest::Method::GET, "/v2/prj/app/manifests/v1")
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.restore();
    wait_until("the pull's event recorded or lost", SOON, || async {
        let m = crate::common::metrics_text(&w.url()).await;
        let pulled = m.contains("wharf_events_total{type=\"PULL_ARTIFACT\"} 1");
        let lost = lost_and_late(&w.url()).await.0 > 0;
        (pulled || lost).then_some(())
    })
    .await;
    assert_eq!(lost_and_late(&w.url()).await, (0, 0), "nothing lost");
    w.shutdown().await;
}

/// PostgreSQL that stops answering (a frozen server, a network dropping packets) holds no push
/// for longer than `store.statement_timeout`: the push succeeds, its event is counted lost;
/// the connections that got no answer are dropped, and wharf goes on with new ones once the
/// server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_that_stops_answering_holds_no_push_past_the_statement_timeout() {
    let (_registry, proxy, pushed) =
        proxied_with_a_push("store: {connect_timeout: 1s, statement_timeout: 1s}\n").await;
    let Pushed {
        w,
        rx,
        rc,
        image,
        _work,
    } = pushed;

    proxy.freeze();
    // (before: the push waited for the database without end)
    let waited = timed_push(&rc, &image, "v2").await;
    assert!(
        waited < Duration::from_secs(6),
        "a push waited {waited:?} for a database that does not answer"
    );
    let r = client()
        .get(format!("{}/readyz", w.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    wait_until("the event counted lost", SOON, || async {
        let (lost, late) = lost_and_late(&w.url()).await;
        (lost >= 1 && late >= 1).then_some(())
    })
    .await;

    proxy.thaw();
    wait_until("ready again", SOON, || async {
        let r = client()
            .get(format!("{}/readyz", w.url()))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    rc.push_image("prj/app", "v3", &image).await;
    let got = rx.wait_for(2, SOON).await;
    assert_eq!(got[1].json()["event_data"]["resources"][0]["tag"], "v3");
    w.shutdown().await;
}

/// A statement stuck behind a lock (another session holds the event table) fails after
/// `store.statement_timeout` on the server: the push it held succeeds in that time, its
/// event counted lost; once the lock is gone, events flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_holds_no_push_past_the_statement_timeout() {
    let (_registry, pushed, (locker, _task)) =
        pushed_with_a_session("store: {statement_timeout: 1s}\n").await;
    let Pushed {
        w,
        rx,
        rc,
        image,
        _work,
    } = pushed;
    locker
        .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // (before: the push waited until the lock was released)
    let waited = timed_push(&rc, &image, "v2").await;
    wait_until("the event counted lost", SOON, || async {
        (lost_and_late(&w.url()).await.0 >= 1).then_some(())
    })
    .await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert!(
        waited < Duration::from_secs(6),
        "a push waited {waited:?} for a locked table"
    );

    rc.push_image("prj/app", "v3", &image).await;
    let got = rx.wait_for(2, SOON).await;
    assert_eq!(got[1].json()["event_data"]["resources"][0]["tag"], "v3");
    w.shutdown().await;
}

/// PostgreSQL ends wharf's sessions (a restart, `pg_terminate_backend`, an idle-session
/// limit) while no request is under way: the next pushes find their writers' connections
/// gone and connect anew before they write, so none of their events is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_ended_by_postgres_lose_no_later_event() {
    let (_registry, pushed, (admin, _task)) = pushed_with_a_session("").await;
    let Pushed {
        w,
        rx,
        rc,
        image,
        _work,
    } = pushed;
    let ended = admin
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(ended >= 2, "wharf's sessions ended: {ended}");
    for (i, tag) in ["v2", "v3", "v4", "v5"].into_iter().enumerate() {
        rc.push_image("prj/app", tag, &image).await;
        let got = rx.wait_for(i + 2, SOON).await;
        assert_eq!(got[i + 1].json()["event_data"]["resources"][0]["tag"], tag);
    }
    assert_eq!(lost_and_late(&w.url()).await, (0, 0));
    w.shutdown().await;
}
