//! Chat formats (Teams, Discord, Mattermost, Google Chat) and custom payload templates.
//!
//! - Every Teams card wharf renders (every sample event, with and without a link, and events
//!   made to be large: hundreds of vulnerabilities, long texts, markdown and emoji) goes through
//!   Microsoft's `adaptivecards` npm parser (pinned in `tests/adaptivecards/`, run with node):
//!   no parse warning, no validation failure, nothing dropped.
//! - The same events as Discord, Mattermost and Google Chat messages stay within each
//!   platform's documented limits.
//! - End to end, per format: a push with skopeo through wharf into a real registry, delivered to
//!   a real receiver, signed, with the auth header; a `Custom` template's output and content
//!   type; a template error at policy creation is a 400 naming the line; an output that is not
//!   JSON fails the attempt as `template_output_invalid`, once, visible in the task log; the
//!   preview endpoint.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use wharf::events::chat::{discord, googlechat, mattermost};
use wharf::events::format::{PayloadFormat, RenderCtx, render, samples};
use wharf::events::{Event, EventKind, Severity, Vulnerability};

use crate::common::api::ApiResp;
use crate::common::oci;
use crate::common::wharf::ADMIN_PASSWORD;
use crate::common::{Receiver, Recorded, Registry, Skopeo, Wharf, client, tools, wait_until};

/// Loopback targets, fast retries.
const FAST: &str = r#"
notification:
  allowed_target_networks: ["127.0.0.0/8"]
  webhook_job_http_client_timeout: 2
  backoff: {initial: 100ms, multiplier: 1.0, max: 100ms, jitter: 0.0}
  breaker_failures: 1000
"#;

const SOON: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(800);

// ---------------------------------------------------------------------------------------------
// the events: every sample, and some made to be large

/// Every sample, plus events made to hit limits: a scan with 300 vulnerabilities whose texts
/// are long and full of markdown, emoji and mentions; 300 tags; a long operator and error.
fn events() -> Vec<(String, Event)> {
    let mut out: Vec<(String, Event)> = samples()
        .into_iter()
        .map(|(n, e)| (n.to_string(), e))
        .collect();
    let scan = out
        .iter()
        .find(|(_, e)| e.kind == EventKind::ScanningCompleted)
        .map(|(_, e)| e.clone())
        .unwrap();
    let wild = "**bold** _it_ `code` [link](https://evil.example) <@123> @everyone @channel <users/all> 😀 é & \"q\" ";
    let mut big = scan.clone();
    big.operator = format!("@everyone {}", wild.repeat(40));
    big.tags = (0..300).map(|i| format!("tag-{i}_x")).collect();
    if let Some(s) = big.scan.as_mut() {
        let v = s.vulnerabilities[0].clone();
        s.vulnerabilities = (0..300)
            .map(|i| Vulnerability {
                id: format!("CVE-2024-{i:05}"),
                severity: Severity::RATED[i % 5],
                description: Some(wild.repeat(50)),
                package: Some(format!("pkg-{i}")),
                ..v.clone()
            })
            .collect();
        s.vulnerabilities_truncated = true;
        s.error = Some(wild.repeat(100));
    }
    out.push(("big_scan".into(), big.clone()));
    let mut test = scan;
    test.test = true;
    out.push(("test_notification".into(), test));
    let mut quota = out
        .iter()
        .find(|(_, e)| e.kind == EventKind::QuotaExceed)
        .map(|(_, e)| e.clone())
        .unwrap();
    if let Some(q) = quota.quota.as_mut() {
        q.details = wild.repeat(300);
    }
    quota.operator = big.operator.clone();
    out.push(("big_quota".into(), quota));
    out
}

fn contexts() -> [RenderCtx; 2] {
    [
        RenderCtx::default(),
        RenderCtx {
            project_id: 1,
            policy_id: 7,
            delivery_id: Some(42),
            external_url: Some("https://registry.example.com".into()),
        },
    ]
}

fn json_of(e: &Event, f: PayloadFormat, ctx: &RenderCtx) -> Value {
    let p = render(e, f, None, ctx).unwrap();
    assert_eq!(p.content_type, "application/json");
    serde_json::from_slice(&p.body).unwrap()
}

// ---------------------------------------------------------------------------------------------
// checked against the platforms' parser and limits

#[test]
fn teams_cards_pass_the_adaptivecards_parser_without_warnings() {
    let (node, script) = tools::adaptivecards_checker();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, e) in events() {
        for (i, ctx) in contexts().iter().enumerate() {
            let card = json_of(&e, PayloadFormat::Teams, ctx);
            // Teams refuses messages over 28 KB
            let size = serde_json::to_vec(&card).unwrap().len();
            assert!(size <= 28 * 1024, "{name}: {size} bytes");
            let file = dir.path().join(format!("{name}.{i}.json"));
            std::fs::write(&file, serde_json::to_vec_pretty(&card).unwrap()).unwrap();
            files.push(file);
        }
    }
    // and the golden files as committed
    let goldens = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/payloads");
    for entry in std::fs::read_dir(&goldens).unwrap() {
        let p = entry.unwrap().path();
        if p.to_string_lossy().ends_with(".teams.json") {
            files.push(p);
        }
    }
    let out = std::process::Command::new(&node)
        .arg(&script)
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("running {} {}: {e}", node.display(), script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reports: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(
        reports.len(),
        files.len(),
        "one report per card: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad: Vec<&Value> = reports
        .iter()
        .filter(|r| r["problems"].as_array().is_none_or(|p| !p.is_empty()))
        .collect();
    assert!(bad.is_empty(), "adaptivecards found problems: {bad:#?}");
    assert!(out.status.success(), "{stdout}");
}

/// Discord's embed limits, counted both in characters and in UTF-16 units.
#[test]
fn discord_payloads_stay_within_discords_limits() {
    let count = |s: &str| s.chars().count().max(s.encode_utf16().count());
    let len = |v: &Value| count(v.as_str().unwrap_or_default());
    for (name, e) in events() {
        for ctx in contexts() {
            let v = json_of(&e, PayloadFormat::Discord, &ctx);
            assert!(len(&v["content"]) <= discord::limits::CONTENT, "{name}");
            assert_eq!(v["allowed_mentions"], json!({"parse": []}), "{name}");
            let embeds = v["embeds"].as_array().unwrap();
            assert!(!embeds.is_empty() && embeds.len() <= discord::limits::EMBEDS);
            let mut total = 0;
            for em in embeds {
                assert!(len(&em["title"]) <= discord::limits::TITLE, "{name}");
                assert!(
                    len(&em["description"]) <= discord::limits::DESCRIPTION,
                    "{name}"
                );
                assert!(
                    len(&em["footer"]["text"]) <= discord::limits::FOOTER,
                    "{name}"
                );
                assert!(
                    len(&em["author"]["name"]) <= discord::limits::AUTHOR,
                    "{name}"
                );
                let fields = em["fields"].as_array().unwrap();
                assert!(fields.len() <= discord::limits::FIELDS, "{name}");
                for f in fields {
                    assert!(len(&f["name"]) <= discord::limits::FIELD_NAME, "{name}");
                    assert!(len(&f["value"]) <= discord::limits::FIELD_VALUE, "{name}");
                    assert!(len(&f["value"]) > 0 && len(&f["name"]) > 0, "{name}: {f}");
                    total += len(&f["name"]) + len(&f["value"]);
                }
                total += len(&em["title"])
                    + len(&em["description"])
                    + len(&em["footer"]["text"])
                    + len(&em["author"]["name"]);
                // an ISO 8601 timestamp and an RGB colour
                chrono::DateTime::parse_from_rfc3339(em["timestamp"].as_str().unwrap()).unwrap();
                assert!(em["color"].as_u64().unwrap() <= 0xFF_FF_FF);
                if ctx.external_url.is_some() {
                    assert!(em["url"].as_str().unwrap().starts_with("https://"));
                } else {
                    assert!(em.get("url").is_none());
                }
            }
            assert!(total <= discord::limits::TOTAL, "{name}: {total}");
        }
    }
}

#[test]
fn mattermost_and_google_chat_payloads_stay_within_their_limits() {
    for (name, e) in events() {
        for ctx in contexts() {
            let m = json_of(&e, PayloadFormat::Mattermost, &ctx);
            let mut chars = m["text"].as_str().unwrap().chars().count();
            for a in m["attachments"].as_array().unwrap() {
                chars += a["text"].as_str().unwrap_or_default().chars().count();
                assert!(a["color"].as_str().unwrap().starts_with('#'));
                assert!(!a["fallback"].as_str().unwrap().is_empty());
                for f in a["fields"].as_array().unwrap() {
                    chars += f["value"].as_str().unwrap().chars().count();
                }
            }
            assert!(chars <= mattermost::POST_CHARS, "{name}: {chars}");
            assert!(!m.to_string().contains("@everyone"), "{name}: mentions");
            assert!(!m.to_string().contains("@channel"), "{name}: mentions");

            let g = json_of(&e, PayloadFormat::GoogleChat, &ctx);
            let bytes = serde_json::to_vec(&g).unwrap().len();
            assert!(bytes <= googlechat::MESSAGE_BYTES, "{name}: {bytes} bytes");
            let text = g["text"].as_str().unwrap();
            assert!(text.chars().count() <= googlechat::TEXT_CHARS, "{name}");
            assert!(!text.contains("<users/"), "{name}: mentions in {text}");
            let card = &g["cardsV2"][0]["card"];
            assert!(!card["header"]["title"].as_str().unwrap().is_empty());
            for s in card["sections"].as_array().unwrap() {
                let n = s["widgets"].as_array().unwrap().len();
                assert!(n > 0 && n <= googlechat::SECTION_WIDGETS, "{name}");
            }
            // card text is Google Chat's HTML: user text is escaped
            assert!(!card.to_string().contains("<users/all>"), "{name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// end to end

async fn api(wharf: &Wharf, method: reqwest::Method, path: &str, body: Option<&Value>) -> ApiResp {
    let mut rb = client()
        .request(method, format!("{}{path}", wharf.url()))
        .basic_auth("admin", Some(ADMIN_PASSWORD));
    if let Some(b) = body {
        rb = rb.json(b);
    }
    ApiResp::read(rb.send().await.expect("API request")).await
}

const POLICIES: &str = "/api/v2.0/projects/prj/webhook/policies";

fn policy(targets: Vec<Value>) -> Value {
    json!({
        "name": "chat",
        "enabled": true,
        "event_types": ["PUSH_ARTIFACT", "SCANNING_COMPLETED", "QUOTA_EXCEED"],
        "targets": targets,
    })
}

/// A registry and a wharf in front of it.
async fn start() -> (Registry, Wharf) {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url()).yaml(FAST).start().await;
    (registry, wharf)
}

/// skopeo copies a small image to `prj/app:<tag>` through wharf; returns its digest.
async fn push(wharf: &Wharf, tag: &str) -> String {
    let work = tempfile::tempdir().unwrap();
    let image = oci::build_image(&work.path().join("src"), tag, &[2048]);
    Skopeo::new()
        .copy_ok(
            &image.oci_ref(),
            &format!("docker://{}/prj/app:{tag}", wharf.host()),
            &[],
        )
        .await;
    image.digest.clone()
}

const SECRET_KEY: [u8; 32] = [7; 32];

fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(SECRET_KEY)
    )
}

/// The request carries the auth header and a Standard Webhooks signature that verifies.
#[track_caller]
fn assert_signed(r: &Recorded) {
    assert_eq!(r.header("authorization"), Some("Bearer chat-token"));
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&SECRET_KEY).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let got = r.header("webhook-signature").expect("webhook-signature");
    assert!(got.split(' ').any(|s| s == want), "{got} != {want}");
}

/// One policy with one target of `target` (plus address, auth header and secret), one push:
/// the request the receiver got, the wharf and the image digest.
async fn delivered(mut target: Value) -> (Recorded, Wharf, Registry, String) {
    let (registry, wharf) = start().await;
    let rx = Receiver::start().await;
    let t = target.as_object_mut().unwrap();
    t.insert("type".into(), json!("http"));
    t.insert("address".into(), json!(format!("{}/hook", rx.url())));
    t.insert("auth_header".into(), json!("Bearer chat-token"));
    t.insert("secret".into(), json!(secret()));
    let created = api(
        &wharf,
        reqwest::Method::POST,
        POLICIES,
        Some(&policy(vec![target])),
    )
    .await
    .expect(201)
    .json();
    assert_eq!(created["targets"][0]["secret"], "***");
    let digest = push(&wharf, "v1").await;
    let got = rx.wait_for(1, SOON).await;
    rx.expect_no_more_than(1, QUIET).await;
    let r = got[0].clone();
    assert_eq!(r.method, "POST");
    assert_signed(&r);
    (r, wharf, registry, digest)
}

/// The manifest link of `prj/app@digest` on this wharf.
fn link(wharf: &Wharf, digest: &str) -> String {
    format!("{}/v2/prj/app/manifests/{digest}", wharf.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_target_gets_an_adaptive_card_in_the_workflows_envelope() {
    let (r, wharf, _registry, digest) = delivered(json!({"payload_format": "Teams"})).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["type"], "message");
    let a = &v["attachments"][0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &a["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.5");
    assert_eq!(card["body"][0]["text"], "Artifact pushed: prj/app:v1");
    assert!(r.text().contains(&digest));
    assert_eq!(card["actions"][0]["url"], link(&wharf, &digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_target_gets_content_and_an_embed() {
    let (r, wharf, _registry, digest) = delivered(json!({"payload_format": "Discord"})).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(
        v["content"],
        "**Artifact pushed**: `prj/app:v1` by anonymous"
    );
    let em = &v["embeds"][0];
    assert_eq!(em["title"], "Artifact pushed: prj/app:v1");
    assert_eq!(em["url"], link(&wharf, &digest));
    assert!(r.text().contains(&digest));
    assert_eq!(v["allowed_mentions"]["parse"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mattermost_target_gets_text_and_an_attachment() {
    let (r, wharf, _registry, digest) = delivered(json!({"payload_format": "Mattermost"})).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .starts_with("#### Artifact pushed: `prj/app:v1`"),
        "{v}"
    );
    let a = &v["attachments"][0];
    assert_eq!(a["title_link"], link(&wharf, &digest));
    assert_eq!(a["color"], "#2EB67D");
    assert!(r.text().contains(&digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_chat_target_gets_text_and_a_card() {
    let (r, wharf, _registry, digest) = delivered(json!({"payload_format": "GoogleChat"})).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["text"], "Artifact pushed: prj/app:v1 by anonymous");
    let card = &v["cardsV2"][0]["card"];
    assert_eq!(card["header"]["subtitle"], "prj/app:v1");
    assert!(r.text().contains(&digest));
    assert!(r.text().contains(&link(&wharf, &digest)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_target_gets_its_template_as_its_content_type() {
    let template = "{{ type }} {{ event_data.repository.repo_full_name }}:{{ event_data.resources[0].tag }} \
                    {{ event_data.resources[0].digest|shortdigest }} by {{ operator }} at \
                    {{ occur_at|datetimeformat('%Y') }} in {{ project.name }} ({{ link|default('-') }})";
    let (r, wharf, _registry, digest) = delivered(json!({
        "payload_format": "Custom",
        "payload_template": template,
        "content_type": "text/plain; charset=utf-8",
    }))
    .await;
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let short = &digest["sha256:".len().."sha256:".len() + 12];
    let year = chrono::Utc::now().format("%Y").to_string();
    assert_eq!(
        r.text(),
        format!(
            "PUSH_ARTIFACT prj/app:v1 {short} by anonymous at {year} in prj ({})",
            link(&wharf, &digest)
        )
    );
    // the API shows the template and content type back
    let list = api(&wharf, reqwest::Method::GET, POLICIES, None)
        .await
        .expect(200)
        .json();
    let t = &list[0]["targets"][0];
    assert_eq!(t["payload_format"], "Custom");
    assert_eq!(t["payload_template"], template);
    assert_eq!(t["content_type"], "text/plain; charset=utf-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_errors_are_400s_naming_the_line_and_the_problem() {
    let (_registry, wharf) = start().await;
    let custom = |template: &str| {
        policy(vec![json!({
            "type": "http",
            "address": "http://127.0.0.1:9/hook",
            "payload_format": "Custom",
            "payload_template": template,
        })])
    };
    let post = |body: Value| {
        let wharf = &wharf;
        async move {
            api(wharf, reqwest::Method::POST, POLICIES, Some(&body))
                .await
                .expect(400)
                .error()
        }
    };
    // a syntax error
    let (code, msg) = post(custom("{\n  \"type\": {{ type }\n}")).await;
    assert_eq!(code, "BAD_REQUEST");
    assert!(
        msg.starts_with("targets[0].payload_template: line 2: syntax error"),
        "{msg}"
    );
    // a typo, found by rendering the samples of the subscribed event types
    let (_, msg) = post(custom("{\"r\": {{ event_data.repositry.name|tojson }}}")).await;
    assert!(
        msg.contains("rendering a sample PUSH_ARTIFACT event"),
        "{msg}"
    );
    assert!(msg.contains("line 1: undefined value"), "{msg}");
    // a field only some event types have, without `default`
    let (_, msg) = post(custom(
        "{\n\"q\": {{ event_data.custom_attributes.Details|upper|tojson }}}",
    ))
    .await;
    assert!(
        msg.contains("PUSH_ARTIFACT") && msg.contains("line 2"),
        "{msg}"
    );
    // output that is not JSON for the JSON content type
    let (_, msg) = post(custom("{\"tag\": {{ event_data.resources[0].tag }}}")).await;
    assert!(msg.contains("not JSON"), "{msg}");
    assert!(msg.contains("line 1 column 9 of the output"), "{msg}");
    // sandbox refusals
    let (_, msg) = post(custom("{% include '/etc/passwd' %}")).await;
    assert!(
        msg.contains("cannot read other templates or files"),
        "{msg}"
    );
    let (_, msg) = post(custom(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    ))
    .await;
    assert!(msg.contains("too much work"), "{msg}");
    let (_, msg) = post(custom(&"x".repeat(8193))).await;
    assert!(msg.contains("8192"), "{msg}");
    // a template needs the Custom format, and Custom a template
    let mut body = custom("{}");
    body["targets"][0]["payload_format"] = json!("Teams");
    let (_, msg) = post(body).await;
    assert!(
        msg.contains("only a target with payload_format Custom"),
        "{msg}"
    );
    let mut body = custom("{}");
    body["targets"][0]
        .as_object_mut()
        .unwrap()
        .remove("payload_template");
    let (_, msg) = post(body).await;
    assert!(msg.contains("required with payload_format Custom"), "{msg}");
    let mut body = custom("{}");
    body["targets"][0]["content_type"] = json!("not a type");
    let (_, msg) = post(body).await;
    assert!(msg.starts_with("targets[0].content_type:"), "{msg}");
    // the chat formats are http formats, not slack ones
    let mut body = custom("{}");
    body["targets"][0] =
        json!({"type": "slack", "address": "http://127.0.0.1:9/", "payload_format": "Discord"});
    post(body).await;

    // a good one is created; an update with a broken template is refused the same way
    let created = api(
        &wharf,
        reqwest::Method::POST,
        POLICIES,
        Some(&custom("{\"type\": {{ type|tojson }}}")),
    )
    .await
    .expect(201)
    .json();
    let id = created["id"].as_i64().unwrap();
    let (_, msg) = api(
        &wharf,
        reqwest::Method::PUT,
        &format!("{POLICIES}/{id}"),
        Some(&custom("{{ nope(1) }}")),
    )
    .await
    .expect(400)
    .error();
    assert!(msg.contains("line 1: unknown function"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_not_json_fails_the_attempt_once_without_a_request() {
    let (_registry, wharf) = start().await;
    let rx = Receiver::start().await;
    // valid JSON for the samples (tag `latest`), not for a push of `v1`
    let template = "{\"tag\": {% if event_data.resources[0].tag == 'latest' %}\"latest\"{% else %}{{ event_data.resources[0].tag }}{% endif %}}";
    let created = api(
        &wharf,
        reqwest::Method::POST,
        POLICIES,
        Some(&policy(vec![json!({
            "type": "http",
            "address": format!("{}/hook", rx.url()),
            "payload_format": "Custom",
            "payload_template": template,
        })])),
    )
    .await
    .expect(201)
    .json();
    let pid = created["id"].as_i64().unwrap();
    push(&wharf, "v1").await;
    let ex = wait_until("the execution to end", SOON, || async {
        let v = api(
            &wharf,
            reqwest::Method::GET,
            &format!("{POLICIES}/{pid}/executions"),
            None,
        )
        .await
        .expect(200)
        .json();
        let ex = v.as_array().cloned().unwrap_or_default();
        (ex.len() == 1 && ex[0]["status"] == "Error").then_some(ex)
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(rx.count(), 0, "nothing is sent");
    let eid = ex[0]["id"].as_i64().unwrap();
    let tasks = api(
        &wharf,
        reqwest::Method::GET,
        &format!("{POLICIES}/{pid}/executions/{eid}/tasks"),
        None,
    )
    .await
    .expect(200)
    .json();
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 1, "not retried: {tasks:?}");
    assert_eq!(
        tasks[0]["extra_attrs"]["error_kind"],
        "template_output_invalid"
    );
    let tid = tasks[0]["id"].as_i64().unwrap();
    let log = api(
        &wharf,
        reqwest::Method::GET,
        &format!("{POLICIES}/{pid}/executions/{eid}/tasks/{tid}/log"),
        None,
    )
    .await
    .expect(200)
    .text;
    assert!(log.contains("not sent"), "{log}");
    assert!(log.contains("error (template_output_invalid)"), "{log}");
    assert!(log.contains("not JSON"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_renders_a_sample_of_the_chosen_event_type() {
    let (_registry, wharf) = start().await;
    let preview = |body: Value| {
        let wharf = &wharf;
        async move {
            api(
                wharf,
                reqwest::Method::POST,
                &format!("{POLICIES}/preview"),
                Some(&body),
            )
            .await
        }
    };
    let r = preview(json!({
        "event_type": "SCANNING_COMPLETED",
        "payload_format": "Custom",
        "payload_template": "{{ event_data.repository.repo_full_name }}: {{ (event_data.resources[0].scan_overview|items|first)[1].summary.summary.Critical }} critical",
        "content_type": "text/plain",
    }))
    .await
    .expect(200)
    .json();
    assert_eq!(r["event_type"], "SCANNING_COMPLETED");
    assert_eq!(r["payload_format"], "Custom");
    assert_eq!(r["content_type"], "text/plain");
    assert_eq!(r["body"], "prj/repo1: 1 critical");
    // any format
    for f in [
        "Default",
        "Teams",
        "Discord",
        "Mattermost",
        "GoogleChat",
        "CloudEvents",
    ] {
        let r = preview(json!({"event_type": "QUOTA_EXCEED", "payload_format": f}))
            .await
            .expect(200)
            .json();
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert!(body.to_string().contains("exceed"), "{f}: {body}");
        assert!(
            body.to_string()
                .contains(&format!("{}/prj/repo1", wharf.host())),
            "{f}: {body}"
        );
    }
    let r = preview(json!({"type": "slack"})).await.expect(200).json();
    assert_eq!(r["payload_format"], "Slack");
    assert_eq!(r["event_type"], "PUSH_ARTIFACT");
    // errors name the line
    let (_, msg) = preview(json!({"payload_format": "Custom", "payload_template": "a\n{{ x.y }}"}))
        .await
        .expect(400)
        .error();
    assert!(msg.contains("line 2: undefined value"), "{msg}");
    let (_, msg) = preview(json!({"event_type": "NOPE", "payload_format": "Teams"}))
        .await
        .expect(400)
        .error();
    assert!(msg.starts_with("event_type: unknown event type"), "{msg}");
    // project admins only
    let r = client()
        .post(format!("{}{POLICIES}/preview", wharf.url()))
        .json(&json!({"payload_format": "Teams"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
