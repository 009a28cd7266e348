//! Payload formats: pure functions from an [`Event`] to the bytes a receiver gets.
//!
//! - `Default`: Harbor 2.x `{type, occur_at, operator, event_data{resources[], repository{},
//!   custom_attributes{}}}`, `application/json`;
//! - `CloudEvents`: structured-mode JSON 1.0 as Harbor 2.8 sends it,
//!   `application/cloudevents+json`, `data` = the Default `event_data`;
//! - `Legacy`: the seed's `{"event_type":"pushImage","events":[{project, repo_name, tag,
//!   full_name, trigger_time, image_id, project_type, …}]}`, `application/json`;
//! - `Slack`: a Block Kit message, `application/json`.
//!
//! Every field the seed lists for an event reaches every format; where a shape has no place for
//! one, a field is added (never dropped). `fixtures/payloads/` pins each kind × format.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Event;

/// The payload formats a target can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PayloadFormat {
    Default,
    CloudEvents,
    Legacy,
    Slack,
}

impl PayloadFormat {
    /// Formats of `http` targets (Slack targets always get `Slack`).
    pub const HTTP: [PayloadFormat; 3] = [
        PayloadFormat::Default,
        PayloadFormat::CloudEvents,
        PayloadFormat::Legacy,
    ];
    pub const ALL: [PayloadFormat; 4] = [
        PayloadFormat::Default,
        PayloadFormat::CloudEvents,
        PayloadFormat::Legacy,
        PayloadFormat::Slack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PayloadFormat::Default => "Default",
            PayloadFormat::CloudEvents => "CloudEvents",
            PayloadFormat::Legacy => "Legacy",
            PayloadFormat::Slack => "Slack",
        }
    }

    pub fn parse(s: &str) -> Option<PayloadFormat> {
        PayloadFormat::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Where the payload goes: CloudEvents names its source after the policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderCtx {
    pub project_id: i64,
    pub policy_id: i64,
}

/// A rendered payload.
#[derive(Debug, Clone)]
pub struct Payload {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Media type key of Harbor's `scan_overview`.
pub const SCAN_REPORT_MIME: &str = "application/vnd.security.vulnerability.report; version=1.1";

/// Render `event` as `format`.
pub fn render(event: &Event, format: PayloadFormat, ctx: &RenderCtx) -> Payload {
    let (content_type, value) = match format {
        PayloadFormat::Default => ("application/json", default_payload(event)),
        PayloadFormat::CloudEvents => ("application/cloudevents+json", cloudevents(event, ctx)),
        PayloadFormat::Legacy => ("application/json", legacy(event)),
        PayloadFormat::Slack => ("application/json", slack(event)),
    };
    Payload {
        content_type,
        body: serde_json::to_vec(&value).unwrap_or_default(),
    }
}

fn put<T: Serialize>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.to_string(), json!(v));
    }
}

fn repo_type(e: &Event) -> &'static str {
    if e.public { "public" } else { "private" }
}

/// Harbor's `event_data`: shared by Default, CloudEvents and (as text) Slack.
pub fn event_data(e: &Event) -> Value {
    let mut resources = Vec::new();
    if e.kind.is_chart() {
        let mut r = Map::new();
        let chart = e.chart.clone().unwrap_or_default();
        r.insert("tag".into(), json!(chart.version));
        r.insert("resource_url".into(), json!(e.resource_url));
        put(&mut r, "digest", e.digest.as_ref());
        r.insert("chart_name".into(), json!(chart.name));
        r.insert("chart_version".into(), json!(chart.version));
        r.insert("chart_type".into(), json!(chart.chart_type));
        put(&mut r, "app_version", chart.app_version.as_ref());
        put(&mut r, "size", chart.size.or(e.size));
        put(&mut r, "media_type", e.media_type.as_ref());
        resources.push(Value::Object(r));
    } else {
        let tags: Vec<Option<&str>> = if e.tags.is_empty() {
            vec![None]
        } else {
            e.tags.iter().map(|t| Some(t.as_str())).collect()
        };
        let host = e
            .resource_url
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        for tag in tags {
            let mut r = Map::new();
            put(&mut r, "digest", e.digest.as_ref());
            r.insert(
                "tag".into(),
                json!(tag.or(e.digest.as_deref()).unwrap_or_default()),
            );
            // each resource names its own tag (or the digest when it has none)
            let url = Event::oci_resource_url(&host, &e.repository, tag, e.digest.as_deref());
            r.insert("resource_url".into(), json!(url));
            let image_name = match tag {
                Some(t) => format!("{}:{t}", e.repository),
                None => e.image_name(),
            };
            r.insert("image_name".into(), json!(image_name));
            put(&mut r, "media_type", e.media_type.as_ref());
            put(&mut r, "size", e.size);
            if !e.platforms.is_empty() {
                r.insert("platforms".into(), json!(e.platforms));
            }
            if let Some(scan) = &e.scan {
                r.insert(
                    "scan_overview".into(),
                    json!({ SCAN_REPORT_MIME: scan_overview(scan) }),
                );
            }
            resources.push(Value::Object(r));
        }
    }
    let repo_name = match &e.chart {
        Some(c) if e.kind.is_chart() && !c.name.is_empty() => c.name.clone(),
        _ => e.short_name().to_string(),
    };
    let mut custom = Map::new();
    custom.insert("event_id".into(), json!(e.id.to_string()));
    if e.test {
        custom.insert("test".into(), json!("true"));
    }
    put(&mut custom, "request_id", e.request_id.as_ref());
    put(&mut custom, "client_addr", e.client_addr.as_ref());
    put(&mut custom, "user_agent", e.user_agent.as_ref());
    if let Some(q) = &e.quota {
        custom.insert("Details".into(), json!(q.details));
        put(&mut custom, "limit", q.limit.map(|v| v.to_string()));
        put(&mut custom, "usage", q.usage.map(|v| v.to_string()));
        put(&mut custom, "adding", q.adding.map(|v| v.to_string()));
    }
    json!({
        "resources": resources,
        "repository": {
            "name": repo_name,
            "namespace": e.project,
            "repo_full_name": e.repository,
            "repo_type": repo_type(e),
        },
        "custom_attributes": custom,
    })
}

/// Harbor's `scan_overview[<mime>]`, plus the vulnerability list (wharf's addition).
fn scan_overview(s: &super::ScanInfo) -> Value {
    let mut o = Map::new();
    o.insert("report_id".into(), json!(s.report_id));
    o.insert("scan_status".into(), json!(s.status));
    o.insert("severity".into(), json!(s.severity));
    if let Some(start) = s.started_at {
        o.insert(
            "duration".into(),
            json!((s.completed_at - start).num_seconds().max(0)),
        );
        o.insert("start_time".into(), json!(rfc3339(&start)));
    }
    o.insert("end_time".into(), json!(rfc3339(&s.completed_at)));
    o.insert(
        "summary".into(),
        json!({
            "total": s.counts.total,
            "fixable": s.counts.fixable,
            "summary": {
                "Critical": s.counts.critical,
                "High": s.counts.high,
                "Medium": s.counts.medium,
                "Low": s.counts.low,
                "Unknown": s.counts.unknown,
            }
        }),
    );
    put(&mut o, "scanner", s.scanner.as_ref());
    o.insert("complete_percent".into(), json!(100));
    put(&mut o, "error", s.error.as_ref());
    o.insert("vulnerabilities".into(), json!(s.vulnerabilities));
    o.insert(
        "vulnerabilities_truncated".into(),
        json!(s.vulnerabilities_truncated),
    );
    Value::Object(o)
}

fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn default_payload(e: &Event) -> Value {
    json!({
        "type": e.kind.harbor_type(),
        "occur_at": e.occurred_at.timestamp(),
        "operator": e.operator,
        "event_data": event_data(e),
    })
}

fn cloudevents(e: &Event, ctx: &RenderCtx) -> Value {
    let mut v = json!({
        "specversion": "1.0",
        "id": e.id.to_string(),
        "source": format!("/projects/{}/webhook/policies/{}", ctx.project_id, ctx.policy_id),
        "type": e.kind.cloudevents_type(),
        "datacontenttype": "application/json",
        "time": rfc3339(&e.occurred_at),
        "data": event_data(e),
    });
    if let Some(obj) = v.as_object_mut() {
        put(obj, "requestid", e.request_id.as_ref());
        obj.insert("operator".into(), json!(e.operator));
    }
    v
}

fn legacy(e: &Event) -> Value {
    let tags: Vec<Option<&str>> = if e.tags.is_empty() {
        vec![None]
    } else {
        e.tags.iter().map(|t| Some(t.as_str())).collect()
    };
    let events: Vec<Value> = tags
        .into_iter()
        .map(|tag| {
            let mut m = Map::new();
            m.insert("project".into(), json!(e.project));
            let repo_name = match &e.chart {
                Some(c) if e.kind.is_chart() && !c.name.is_empty() => c.name.clone(),
                _ => e.short_name().to_string(),
            };
            let full_name = e.repository.clone();
            m.insert("repo_name".into(), json!(repo_name));
            let tag_text = tag
                .map(str::to_string)
                .or_else(|| {
                    e.chart
                        .as_ref()
                        .filter(|_| e.kind.is_chart())
                        .map(|c| c.version.clone())
                })
                .or_else(|| e.digest.clone())
                .unwrap_or_default();
            m.insert("tag".into(), json!(tag_text));
            m.insert("full_name".into(), json!(full_name));
            m.insert("trigger_time".into(), json!(e.occurred_at.timestamp()));
            put(
                &mut m,
                "image_id",
                e.digest
                    .as_deref()
                    .map(|d| d.split_once(':').map(|(_, h)| h).unwrap_or(d)),
            );
            m.insert(
                "project_type".into(),
                json!(if e.public { "Public" } else { "Private" }),
            );
            // additions: every seed field of every event kind has a place here too
            m.insert("event_id".into(), json!(e.id.to_string()));
            if e.test {
                m.insert("test".into(), json!(true));
            }
            m.insert("operator".into(), json!(e.operator));
            put(&mut m, "digest", e.digest.as_ref());
            let image_name = match tag {
                Some(t) => format!("{}:{t}", e.repository),
                None => e.image_name(),
            };
            m.insert("image_name".into(), json!(image_name));
            m.insert("tags".into(), json!(e.tags));
            let url = if e.kind.is_chart() {
                e.resource_url.clone()
            } else {
                let host = e.resource_url.split('/').next().unwrap_or_default();
                Event::oci_resource_url(host, &e.repository, tag, e.digest.as_deref())
            };
            m.insert("resource_url".into(), json!(url));
            put(&mut m, "media_type", e.media_type.as_ref());
            put(&mut m, "size", e.size);
            if !e.platforms.is_empty() {
                m.insert("platforms".into(), json!(e.platforms));
            }
            if let Some(c) = e.chart.as_ref().filter(|_| e.kind.is_chart()) {
                m.insert("chart_name".into(), json!(c.name));
                m.insert("chart_version".into(), json!(c.version));
                m.insert("chart_type".into(), json!(c.chart_type));
                put(&mut m, "app_version", c.app_version.as_ref());
                put(&mut m, "chart_size", c.size.or(e.size));
            }
            if let Some(s) = &e.scan {
                m.insert("scan_status".into(), json!(s.status));
                m.insert("severity".into(), json!(s.severity));
                // the seed's critical / major / minor: Critical, High, Medium + Low
                m.insert("critical".into(), json!(s.counts.critical));
                m.insert("major".into(), json!(s.counts.high));
                m.insert("minor".into(), json!(s.counts.medium + s.counts.low));
                m.insert("severity_counts".into(), json!(s.counts));
                m.insert("completed_at".into(), json!(s.completed_at.timestamp()));
                put(&mut m, "scanner", s.scanner.as_ref());
                m.insert("vulnerabilities".into(), json!(s.vulnerabilities));
                m.insert(
                    "vulnerabilities_truncated".into(),
                    json!(s.vulnerabilities_truncated),
                );
                put(&mut m, "error", s.error.as_ref());
            }
            if let Some(q) = &e.quota {
                m.insert("details".into(), json!(q.details));
                put(&mut m, "limit", q.limit);
                put(&mut m, "usage", q.usage);
                put(&mut m, "adding", q.adding);
            }
            Value::Object(m)
        })
        .collect();
    json!({"event_type": e.kind.legacy_type(), "events": events})
}

/// Slack section text is limited to 3000 characters.
const SLACK_TEXT_MAX: usize = 2900;

fn slack(e: &Event) -> Value {
    let ts = e.occurred_at.timestamp();
    let subject = if e.kind.is_chart() {
        match &e.chart {
            Some(c) => format!("{}/{}:{}", e.project, c.name, c.version),
            None => e.repository.clone(),
        }
    } else {
        e.image_name()
    };
    let mut fields = vec![
        format!("*Event type*\n{}", e.kind.harbor_type()),
        format!(
            "*Occurred*\n<!date^{ts}^{{date_short_pretty}} {{time_secs}}|{}>",
            rfc3339(&e.occurred_at)
        ),
        format!("*Operator*\n{}", e.operator),
        format!("*Repository*\n{} ({})", e.repository, repo_type(e)),
    ];
    if !e.tags.is_empty() {
        fields.push(format!("*Tags*\n{}", e.tags.join(", ")));
    }
    if let Some(d) = &e.digest {
        fields.push(format!("*Digest*\n`{d}`"));
    }
    if let Some(size) = e.size {
        fields.push(format!("*Size*\n{size} bytes"));
    }
    if let Some(s) = &e.scan {
        fields.push(format!(
            "*Scan*\n{}: critical {}, high {}, medium {}, low {}, unknown {} (fixable {})",
            s.status,
            s.counts.critical,
            s.counts.high,
            s.counts.medium,
            s.counts.low,
            s.counts.unknown,
            s.counts.fixable
        ));
    }
    if let Some(q) = &e.quota {
        fields.push(format!("*Quota*\n{}", q.details));
    }
    fields.truncate(10); // Block Kit allows 10 fields per section
    let mut data = serde_json::to_string_pretty(&event_data(e)).unwrap_or_default();
    if data.len() > SLACK_TEXT_MAX {
        let mut cut = SLACK_TEXT_MAX;
        while !data.is_char_boundary(cut) {
            cut -= 1;
        }
        data.truncate(cut);
        data.push_str("\n…(truncated)");
    }
    json!({
        "text": format!("{} {} by {}", e.kind.harbor_type(), subject, e.operator),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": format!("{}: {}", e.kind.harbor_type(), truncate_chars(&subject, 120))}},
            {"type": "section", "fields": fields.into_iter().map(|t| json!({"type": "mrkdwn", "text": t})).collect::<Vec<_>>()},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*Event data*\n```{data}```")}},
        ]
    })
}

fn truncate_chars(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}

/// Sample events with fixed id and time, named: the inputs of the golden payloads. One per
/// kind, plus a multi-platform push and a pull by digest.
pub fn samples() -> Vec<(&'static str, Event)> {
    use super::*;
    use chrono::TimeZone;
    let base = |kind: EventKind, repo: &str| -> Event {
        let mut e = Event::new(
            kind,
            &crate::route::Repository::parse(repo).unwrap_or_else(|| unreachable!("fixed name")),
            "alice",
        );
        e.id = uuid::Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap_or_default();
        e.occurred_at = chrono::Utc
            .timestamp_opt(1_700_000_000, 0)
            .single()
            .unwrap_or_default();
        e.request_id = Some("req-1".into());
        e.client_addr = Some("127.0.0.1".into());
        e.user_agent = Some("skopeo/1.9.3".into());
        e
    };
    const DIGEST: &str = "sha256:9e2c9d5f44efbb6ee83aecd17a120c513047d289d142ec5738c9f02f9b24ad07";
    const HOST: &str = "registry.example.com";
    let image = |kind: EventKind| {
        let mut e = base(kind, "prj/repo1");
        e.tags = vec!["latest".into()];
        e.digest = Some(DIGEST.into());
        e.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
        e.size = Some(3_340_288);
        e.resource_url = Event::oci_resource_url(HOST, "prj/repo1", Some("latest"), None);
        e
    };
    let chart = |kind: EventKind| {
        let mut e = base(kind, "prj/mychart");
        e.tags = vec!["0.1.0".into()];
        e.digest = Some(DIGEST.into());
        e.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
        e.size = Some(4167);
        e.resource_url = Event::oci_resource_url(HOST, "prj/mychart", Some("0.1.0"), None);
        e.chart = Some(ChartInfo {
            name: "mychart".into(),
            version: "0.1.0".into(),
            chart_type: "application".into(),
            app_version: Some("1.16.0".into()),
            size: Some(4167),
        });
        e
    };
    let scan = |status: &str| {
        let mut e = image(if status == "Success" {
            EventKind::ScanningCompleted
        } else {
            EventKind::ScanningFailed
        });
        e.operator = "trivy".into();
        e.scan = Some(ScanInfo {
            status: status.into(),
            severity: if status == "Success" {
                "Critical".into()
            } else {
                "None".into()
            },
            counts: if status == "Success" {
                SeverityCounts {
                    critical: 1,
                    high: 2,
                    medium: 0,
                    low: 1,
                    unknown: 0,
                    total: 4,
                    fixable: 3,
                }
            } else {
                SeverityCounts::default()
            },
            completed_at: e.occurred_at,
            started_at: Some(e.occurred_at - chrono::Duration::seconds(12)),
            scanner: Some(Scanner {
                name: "Trivy".into(),
                vendor: "Aqua Security".into(),
                version: "0.50.1".into(),
            }),
            vulnerabilities: if status == "Success" {
                vec![Vulnerability {
                    id: "CVE-2023-0286".into(),
                    package: Some("libssl3".into()),
                    version: Some("3.0.7-r0".into()),
                    fix_version: Some("3.0.8-r0".into()),
                    severity: "Critical".into(),
                    description: Some("X.400 address type confusion in X.509 GeneralName".into()),
                    link: Some("https://avd.aquasec.com/nvd/cve-2023-0286".into()),
                    fix_link: Some("https://www.openssl.org/news/secadv/20230207.txt".into()),
                }]
            } else {
                Vec::new()
            },
            vulnerabilities_truncated: false,
            error: (status != "Success").then(|| "failed to analyze image: layer not found".into()),
            report_id: "01890a5d-0000-7000-8000-000000000001".into(),
        });
        e
    };
    let quota = |kind: EventKind| {
        let mut e = image(kind);
        e.quota = Some(QuotaInfo {
            details: if kind == EventKind::QuotaExceed {
                "adding 2.1 MiB of storage resource, which when updated to current usage of 8.3 MiB will exceed the configured upper limit of 10.0 MiB.".into()
            } else {
                "usage of 8.6 MiB has crossed the warning threshold of 85% of the configured upper limit of 10.0 MiB.".into()
            },
            limit: Some(10 * 1024 * 1024),
            usage: Some(8_703_180),
            adding: Some(2_202_009),
        });
        e
    };
    let mut multi = image(EventKind::PushArtifact);
    multi.media_type = Some("application/vnd.oci.image.index.v1+json".into());
    multi.platforms = vec!["linux/amd64".into(), "linux/arm64".into()];
    let mut delete = image(EventKind::DeleteArtifact);
    delete.tags = vec!["latest".into(), "v1".into()];
    delete.resource_url = Event::oci_resource_url(HOST, "prj/repo1", None, Some(DIGEST));
    let mut by_digest = image(EventKind::PullArtifact);
    by_digest.tags.clear();
    by_digest.resource_url = Event::oci_resource_url(HOST, "prj/repo1", None, Some(DIGEST));
    vec![
        ("push_artifact", image(EventKind::PushArtifact)),
        ("push_artifact_index", multi),
        ("pull_artifact", image(EventKind::PullArtifact)),
        ("pull_artifact_by_digest", by_digest),
        ("delete_artifact", delete),
        ("upload_chart", chart(EventKind::UploadChart)),
        ("download_chart", chart(EventKind::DownloadChart)),
        ("delete_chart", chart(EventKind::DeleteChart)),
        ("scanning_completed", scan("Success")),
        ("scanning_failed", scan("Error")),
        ("quota_exceed", quota(EventKind::QuotaExceed)),
        ("quota_warning", quota(EventKind::QuotaWarning)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/payloads")
    }

    /// Golden files: `fixtures/payloads/<kind>.<format>.json`. `WHARF_BLESS=1` rewrites them.
    #[test]
    fn golden_payloads() {
        let bless = std::env::var_os("WHARF_BLESS").is_some();
        let ctx = RenderCtx {
            project_id: 1,
            policy_id: 7,
        };
        let mut failures = Vec::new();
        for (name, e) in samples() {
            for f in PayloadFormat::ALL {
                let p = render(&e, f, &ctx);
                let v: Value = serde_json::from_slice(&p.body).unwrap();
                let pretty = serde_json::to_string_pretty(&v).unwrap() + "\n";
                let path =
                    fixtures().join(format!("{name}.{}.json", f.name().to_ascii_lowercase()));
                if bless {
                    std::fs::create_dir_all(fixtures()).unwrap();
                    std::fs::write(&path, &pretty).unwrap();
                    continue;
                }
                match std::fs::read_to_string(&path) {
                    Ok(golden) if golden == pretty => {}
                    Ok(_) => failures.push(format!("{} differs", path.display())),
                    Err(e) => failures.push(format!("{}: {e}", path.display())),
                }
            }
        }
        assert!(
            failures.is_empty(),
            "golden payloads (WHARF_BLESS=1 to rewrite):\n{}",
            failures.join("\n")
        );
    }

    /// docs/events.md shows every golden payload as it is (regenerate its examples section from
    /// fixtures/payloads when this fails).
    #[test]
    fn docs_show_the_golden_payloads() {
        let doc = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/events.md"),
        )
        .unwrap();
        for (name, _) in samples() {
            for f in PayloadFormat::ALL {
                let file =
                    fixtures().join(format!("{name}.{}.json", f.name().to_ascii_lowercase()));
                let golden = std::fs::read_to_string(&file).unwrap();
                assert!(
                    doc.contains(golden.trim()),
                    "docs/events.md lacks {}",
                    file.display()
                );
            }
        }
    }

    /// Every seed field of every kind appears in every format.
    #[test]
    fn seed_fields_reach_every_format() {
        let ctx = RenderCtx::default();
        for (_, e) in samples() {
            let mut must: Vec<String> = vec![e.project.clone(), e.operator.clone()];
            if !e.kind.is_chart() {
                must.push(e.image_name());
                must.push(e.digest.clone().unwrap());
            }
            if e.kind == EventKind::PushArtifact {
                must.push(e.resource_url.clone());
                must.push("latest".into());
            }
            if e.kind == EventKind::DeleteArtifact {
                must.push(e.size.unwrap().to_string());
            }
            if let Some(c) = &e.chart {
                must.extend([
                    c.name.clone(),
                    c.version.clone(),
                    c.chart_type.clone(),
                    c.size.unwrap().to_string(),
                ]);
            }
            if let Some(s) = &e.scan {
                must.push(s.status.clone());
                if let Some(err) = &s.error {
                    must.push(err.clone());
                }
                for v in &s.vulnerabilities {
                    must.extend([
                        v.id.clone(),
                        v.description.clone().unwrap(),
                        v.link.clone().unwrap(),
                        v.severity.clone(),
                        v.fix_link.clone().unwrap(),
                    ]);
                }
            }
            if let Some(q) = &e.quota {
                must.push(q.details.clone());
            }
            for f in PayloadFormat::ALL {
                let body = String::from_utf8(render(&e, f, &ctx).body).unwrap();
                // CloudEvents carries the time as RFC 3339 in `time`
                let time = match f {
                    PayloadFormat::CloudEvents => rfc3339(&e.occurred_at),
                    _ => e.occurred_at.timestamp().to_string(),
                };
                assert!(
                    body.contains(&time),
                    "{:?} {:?} lacks the time: {body}",
                    e.kind,
                    f
                );
                for m in &must {
                    assert!(
                        body.contains(m.as_str()),
                        "{:?} {:?} lacks {m}: {body}",
                        e.kind,
                        f
                    );
                }
            }
        }
    }

    #[test]
    fn tagless_resources_carry_the_digest() {
        let (_, mut e) = samples().remove(2);
        e.tags.clear();
        let v = event_data(&e);
        assert_eq!(v["resources"][0]["tag"], json!(e.digest.clone().unwrap()));
        assert_eq!(
            v["resources"][0]["image_name"],
            json!(format!("prj/repo1@{}", e.digest.unwrap()))
        );
    }

    #[test]
    fn slack_text_stays_within_block_kit_limits() {
        let (_, mut e) = samples().remove(8);
        let v = e.scan.as_ref().unwrap().vulnerabilities[0].clone();
        e.scan.as_mut().unwrap().vulnerabilities = vec![v; 200];
        let p = render(&e, PayloadFormat::Slack, &RenderCtx::default());
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        for block in v["blocks"].as_array().unwrap() {
            if let Some(t) = block["text"]["text"].as_str() {
                assert!(t.chars().count() <= 3000, "{}", t.len());
            }
        }
    }
}
