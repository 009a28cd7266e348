//! Payload formats: pure functions from an [`Event`] to the bytes a receiver gets.
//!
//! - `Default`: Harbor 2.x `{type, occur_at, operator, event_data{resources[], repository{},
//!   scan{}, custom_attributes{}}}`, `application/json`: one resource per event, as Harbor
//!   (wharf adds `tags`, `image_name`, `media_type`, `size`, `platforms` to it);
//! - `CloudEvents`: structured-mode JSON 1.0 as Harbor 2.8+ sends it,
//!   `application/cloudevents+json`, `data` = the Default `event_data`, Harbor's type names,
//!   a fresh `id` per delivery (stable across its retries) and wharf's event id in the
//!   extension `eventid`;
//! - `Legacy`: the seed's `{"event_type":"pushImage","events":[{project, repo_name, tag,
//!   full_name, trigger_time, image_id, project_type, …}]}`, `application/json`;
//! - `Slack`: Harbor's Slack message: six mrkdwn sections, the last the tab-indented
//!   `event_data`, `application/json`;
//! - `SlackRich`: wharf's own Block Kit layout (header, fields, event data), an opt-in for
//!   Slack targets.
//!
//! Every field the seed lists for an event reaches every format; where a shape has no place for
//! one, a field is added (never dropped). `fixtures/payloads/` pins each kind × format.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Event, ScanType};

/// The payload formats a target can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PayloadFormat {
    Default,
    CloudEvents,
    Legacy,
    /// Harbor's Slack message (what a Slack target gets by default).
    Slack,
    /// wharf's richer Slack layout (a Slack target's opt-in).
    SlackRich,
}

impl PayloadFormat {
    /// Formats of `http` targets (Harbor's two, and wharf's `Legacy`).
    pub const HTTP: [PayloadFormat; 3] = [
        PayloadFormat::Default,
        PayloadFormat::CloudEvents,
        PayloadFormat::Legacy,
    ];
    pub const ALL: [PayloadFormat; 5] = [
        PayloadFormat::Default,
        PayloadFormat::CloudEvents,
        PayloadFormat::Legacy,
        PayloadFormat::Slack,
        PayloadFormat::SlackRich,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PayloadFormat::Default => "Default",
            PayloadFormat::CloudEvents => "CloudEvents",
            PayloadFormat::Legacy => "Legacy",
            PayloadFormat::Slack => "Slack",
            PayloadFormat::SlackRich => "SlackRich",
        }
    }

    pub fn parse(s: &str) -> Option<PayloadFormat> {
        PayloadFormat::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Where the payload goes: CloudEvents names its source after the policy, and its `id` after
/// the delivery.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderCtx {
    pub project_id: i64,
    pub policy_id: i64,
    /// The delivery (outbox row) the body is for; `None` for a test notification.
    pub delivery_id: Option<i64>,
}

impl RenderCtx {
    /// The CloudEvents `id` of this body: a UUID derived from the event and the delivery, so
    /// each target of an event gets its own id (as Harbor, which makes one per target) and
    /// every retry of a delivery repeats it (Harbor retries the stored body). Without a
    /// delivery (a test notification) it is random.
    pub fn cloudevent_id(&self, event: &Event) -> uuid::Uuid {
        use sha2::Digest as _;
        let Some(delivery) = self.delivery_id else {
            return uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        };
        let hash = sha2::Sha256::digest(format!("{}/{}/{delivery}", event.id, self.policy_id));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash[..16]);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
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
        PayloadFormat::SlackRich => ("application/json", slack_rich(event)),
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
        // one resource per event, as Harbor (a delete with several tags names the first); the
        // other tags are in `tags`
        let tag = e.tag();
        let host = e
            .resource_url
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut r = Map::new();
        put(&mut r, "digest", e.digest.as_ref());
        r.insert(
            "tag".into(),
            json!(tag.or(e.digest.as_deref()).unwrap_or_default()),
        );
        let url = Event::oci_resource_url(&host, &e.repository, tag, e.digest.as_deref());
        r.insert("resource_url".into(), json!(url));
        if let Some(scan) = &e.scan {
            match scan.scan_type {
                ScanType::Vulnerability => {
                    r.insert(
                        "scan_overview".into(),
                        json!({ SCAN_REPORT_MIME: scan_overview(scan) }),
                    );
                }
                ScanType::Sbom => {
                    r.insert("sbom_overview".into(), sbom_overview(scan));
                }
            }
        }
        if !e.tags.is_empty() {
            r.insert("tags".into(), json!(e.tags));
        }
        r.insert("image_name".into(), json!(e.image_name()));
        put(&mut r, "media_type", e.media_type.as_ref());
        put(&mut r, "size", e.size);
        if !e.platforms.is_empty() {
            r.insert("platforms".into(), json!(e.platforms));
        }
        resources.push(Value::Object(r));
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
    let mut repository = Map::new();
    if e.kind.is_artifact() {
        put(&mut repository, "date_created", e.repository_created);
    }
    repository.insert("name".into(), json!(repo_name));
    repository.insert("namespace".into(), json!(e.project));
    repository.insert("repo_full_name".into(), json!(e.repository));
    repository.insert("repo_type".into(), json!(repo_type(e)));
    let mut data = Map::new();
    data.insert("resources".into(), json!(resources));
    data.insert("repository".into(), Value::Object(repository));
    if let Some(scan) = &e.scan {
        data.insert("scan".into(), json!({"scan_type": scan.scan_type.name()}));
    }
    data.insert("custom_attributes".into(), Value::Object(custom));
    Value::Object(data)
}

/// Harbor's `sbom_overview` of an sbom scan.
fn sbom_overview(s: &super::ScanInfo) -> Value {
    let mut o = Map::new();
    o.insert("report_id".into(), json!(s.report_id));
    o.insert("scan_status".into(), json!(s.status.name()));
    if let Some(start) = s.started_at {
        o.insert(
            "duration".into(),
            json!((s.completed_at - start).num_seconds().max(0)),
        );
        o.insert("start_time".into(), json!(rfc3339(&start)));
    }
    o.insert("end_time".into(), json!(rfc3339(&s.completed_at)));
    put(&mut o, "sbom_digest", s.sbom_digest.as_ref());
    put(&mut o, "scanner", s.scanner.as_ref());
    put(&mut o, "error", s.error.as_ref());
    Value::Object(o)
}

/// Harbor's `scan_overview[<mime>]`, plus the vulnerability list (wharf's addition).
fn scan_overview(s: &super::ScanInfo) -> Value {
    let mut o = Map::new();
    o.insert("report_id".into(), json!(s.report_id));
    o.insert("scan_status".into(), json!(s.status.name()));
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
        "id": ctx.cloudevent_id(e).to_string(),
        "source": format!("/projects/{}/webhook/policies/{}", ctx.project_id, ctx.policy_id),
        "type": e.kind.cloudevents_type(),
        "datacontenttype": "application/json",
        "time": rfc3339(&e.occurred_at),
        "data": event_data(e),
    });
    if let Some(obj) = v.as_object_mut() {
        put(obj, "requestid", e.request_id.as_ref());
        obj.insert("operator".into(), json!(e.operator));
        // wharf's event id (the same for every target and retry)
        obj.insert("eventid".into(), json!(e.id.to_string()));
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
                m.insert("scan_status".into(), json!(s.status.name()));
                m.insert("scan_type".into(), json!(s.scan_type.name()));
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

/// Harbor's Slack message: six mrkdwn sections (see the module doc). Harbor does not shorten
/// the event data; Slack refuses a section over 3,000 characters, so wharf cuts it (marked).
fn slack(e: &Event) -> Value {
    let ts = e.occurred_at.timestamp();
    let mut data = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut data, formatter);
    let text = match event_data(e).serialize(&mut ser) {
        Ok(()) => String::from_utf8(data).unwrap_or_default(),
        Err(_) => String::new(),
    };
    let section = |t: String| json!({"type": "section", "text": {"type": "mrkdwn", "text": t}});
    json!({
        "blocks": [
            section("*Harbor webhook events*".into()),
            section(format!("*event_type:* {}", e.kind.harbor_type())),
            section(format!(
                "*occur_at:* <!date^{ts}^{{date}} at {{time}}|February 18th, 2014 at 6:39 AM PST>"
            )),
            section(format!("*operator:* {}", e.operator)),
            section("*event_data:*".into()),
            section(format!("```{}```", cut(text))),
        ]
    })
}

/// `text` within Slack's section limit (minus the fences), cut at a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > SLACK_TEXT_MAX {
        let mut at = SLACK_TEXT_MAX;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push_str("\n…(truncated)");
    }
    text
}

/// wharf's own Slack layout (format `SlackRich`).
fn slack_rich(e: &Event) -> Value {
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
            s.status.name(),
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
    let data = cut(serde_json::to_string_pretty(&event_data(e)).unwrap_or_default());
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
        e.repository_created = Some(1_699_990_000);
        e
    };
    let chart = |kind: EventKind| {
        let mut e = base(kind, "prj/mychart");
        e.tags = vec!["0.1.0".into()];
        e.digest = Some(DIGEST.into());
        e.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
        e.size = Some(4167);
        e.resource_url = Event::oci_resource_url(HOST, "prj/mychart", Some("0.1.0"), None);
        e.repository_created = Some(1_699_990_000);
        e.chart = Some(ChartInfo {
            name: "mychart".into(),
            version: "0.1.0".into(),
            chart_type: "application".into(),
            app_version: Some("1.16.0".into()),
            size: Some(4167),
        });
        e
    };
    let scan = |status: ScanStatus| {
        let ok = status == ScanStatus::Success;
        let mut e = image(status.kind());
        e.repository_created = None; // Harbor sends none on scan events
        e.operator = "trivy".into();
        e.scan = Some(ScanInfo {
            status,
            scan_type: ScanType::Vulnerability,
            severity: if ok { "Critical".into() } else { "None".into() },
            counts: if ok {
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
            vulnerabilities: if ok {
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
            error: match status {
                ScanStatus::Success => None,
                ScanStatus::Error => Some("failed to analyze image: layer not found".into()),
                ScanStatus::Stopped => Some("stopped by admin".into()),
            },
            report_id: "01890a5d-0000-7000-8000-000000000001".into(),
            sbom_digest: None,
        });
        e
    };
    let quota = |kind: EventKind| {
        let mut e = image(kind);
        e.repository_created = None; // Harbor sends none on quota events
        e.quota = Some(QuotaInfo {
            details: if kind == EventKind::QuotaExceed {
                "adding 2.1 MiB of storage resource, which when updated to current usage of 8.3 MiB will exceed the configured upper limit of 10.0 MiB.".into()
            } else {
                "quota usage reach 85%: resource storage used 8.6 MiB of 10.0 MiB".into()
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
        ("scanning_completed", scan(ScanStatus::Success)),
        ("scanning_failed", scan(ScanStatus::Error)),
        ("scanning_stopped", scan(ScanStatus::Stopped)),
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
            delivery_id: Some(42),
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
                must.push(s.status.name().to_string());
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
        for f in [PayloadFormat::Slack, PayloadFormat::SlackRich] {
            let p = render(&e, f, &RenderCtx::default());
            let v: Value = serde_json::from_slice(&p.body).unwrap();
            for block in v["blocks"].as_array().unwrap() {
                if let Some(t) = block["text"]["text"].as_str() {
                    assert!(t.chars().count() <= 3000, "{f:?}: {}", t.len());
                }
            }
        }
    }

    /// Harbor's Slack message: six sections in Harbor's order, the event data tab-indented.
    #[test]
    fn slack_is_harbors_layout() {
        let (_, e) = samples().remove(0);
        let v: Value =
            serde_json::from_slice(&render(&e, PayloadFormat::Slack, &RenderCtx::default()).body)
                .unwrap();
        let texts: Vec<&str> = v["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                assert_eq!(b["type"], "section");
                assert_eq!(b["text"]["type"], "mrkdwn");
                b["text"]["text"].as_str().unwrap()
            })
            .collect();
        assert_eq!(texts.len(), 6);
        assert_eq!(texts[0], "*Harbor webhook events*");
        assert_eq!(texts[1], "*event_type:* PUSH_ARTIFACT");
        assert_eq!(
            texts[2],
            "*occur_at:* <!date^1700000000^{date} at {time}|February 18th, 2014 at 6:39 AM PST>"
        );
        assert_eq!(texts[3], "*operator:* alice");
        assert_eq!(texts[4], "*event_data:*");
        assert!(
            texts[5].starts_with("```{\n\t\"resources\": [\n\t\t{"),
            "{}",
            texts[5]
        );
        assert!(texts[5].ends_with("}```"));
        assert_eq!(v.as_object().unwrap().len(), 1, "only blocks: {v}");
    }

    /// Each delivery gets its own CloudEvents id, the same on every retry; wharf's event id is
    /// the extension `eventid`.
    #[test]
    fn cloudevents_id_is_per_delivery() {
        let (_, e) = samples().remove(0);
        let id = |policy_id, delivery_id| {
            let ctx = RenderCtx {
                project_id: 1,
                policy_id,
                delivery_id,
            };
            let v: Value =
                serde_json::from_slice(&render(&e, PayloadFormat::CloudEvents, &ctx).body).unwrap();
            assert_eq!(v["eventid"], e.id.to_string());
            v["id"].as_str().unwrap().to_string()
        };
        assert_eq!(id(7, Some(1)), id(7, Some(1)));
        assert_ne!(id(7, Some(1)), id(7, Some(2)));
        assert_ne!(id(7, Some(1)), e.id.to_string());
        assert_ne!(id(7, None), id(7, None));
        assert!(uuid::Uuid::parse_str(&id(7, Some(3))).is_ok());
    }

    /// Every JSON path of `v` (`a.b`, arrays as `a[]`; an object under `scan_overview` keyed by
    /// a MIME type as `<mime>`).
    fn paths(v: &Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.ends_with("scan_overview") {
                        "<mime>"
                    } else {
                        k
                    };
                    let p = if prefix.is_empty() {
                        key.to_string()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    out.insert(p.clone());
                    paths(x, &p, out);
                }
            }
            Value::Array(a) => {
                for x in a {
                    paths(x, &format!("{prefix}[]"), out);
                }
            }
            _ => {}
        }
    }

    /// fixtures/harbor-fields.json lists, per sample and format, Harbor's fields (from Harbor's
    /// notifier code and the reference) and the fields wharf adds. Every Harbor field is there,
    /// and nothing else is added than what docs/events.md lists.
    #[test]
    fn formats_have_harbors_fields_and_only_the_documented_additions() {
        let spec: Value = serde_json::from_str(
            &std::fs::read_to_string(
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/harbor-fields.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let ctx = RenderCtx {
            project_id: 1,
            policy_id: 7,
            delivery_id: Some(42),
        };
        let doc = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/events.md"),
        )
        .unwrap();
        let mut failures = Vec::new();
        for (name, e) in samples() {
            let Some(formats) = spec["samples"].get(name) else {
                assert!(e.kind.is_chart(), "{name} is not in harbor-fields.json");
                continue;
            };
            for f in [
                PayloadFormat::Default,
                PayloadFormat::CloudEvents,
                PayloadFormat::Slack,
            ] {
                let v: Value = serde_json::from_slice(&render(&e, f, &ctx).body).unwrap();
                let mut got = std::collections::BTreeSet::new();
                paths(&v, "", &mut got);
                let list = |k: &str| -> std::collections::BTreeSet<String> {
                    formats[f.name()][k]
                        .as_array()
                        .unwrap_or_else(|| panic!("{name}.{}.{k}", f.name()))
                        .iter()
                        .map(|p| p.as_str().unwrap().to_string())
                        .collect()
                };
                let (harbor, adds) = (list("harbor"), list("wharf_adds"));
                for missing in harbor.difference(&got) {
                    failures.push(format!("{name} {}: lacks Harbor's {missing}", f.name()));
                }
                for extra in got.difference(&harbor) {
                    if !adds.contains(extra) {
                        failures.push(format!("{name} {}: undocumented {extra}", f.name()));
                    }
                }
                for stale in adds.difference(&got) {
                    failures.push(format!("{name} {}: listed but absent {stale}", f.name()));
                }
                // docs/events.md names every addition (inside event_data / data), or the
                // added field it is part of
                for add in &adds {
                    let short = add
                        .strip_prefix("event_data.")
                        .or_else(|| add.strip_prefix("data."))
                        .unwrap_or(add);
                    let named = short
                        .match_indices('.')
                        .map(|(i, _)| &short[..i])
                        .chain(std::iter::once(short))
                        .map(|p| p.trim_end_matches("[]"))
                        .any(|p| {
                            adds.iter().any(|a| a.ends_with(p)) && doc.contains(&format!("`{p}`"))
                        });
                    if !named {
                        failures.push(format!("docs/events.md does not name `{short}`"));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
