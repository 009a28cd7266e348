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
//!   Slack targets;
//! - `Teams`, `Discord`, `Mattermost`, `GoogleChat`: one chat message per event, as each
//!   platform's incoming webhooks take it ([`super::chat`]), `application/json`;
//! - `Custom`: the target's `payload_template` ([`super::template`]), as its `content_type`.
//!
//! Every field the seed lists for an event reaches every format; where a shape has no place for
//! one, a field is added (never dropped). `fixtures/payloads/` pins each kind × format.

mod data;
mod legacy;
mod samples;
mod slack;
#[cfg(test)]
pub(crate) mod tests;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::template::{self, TemplateError};
use super::{Event, chat};
pub use samples::{sample, sample_in, samples, samples_of};

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
    /// An Adaptive Card 1.5 in the envelope of Microsoft Teams' Workflows webhooks.
    Teams,
    /// Discord's execute-webhook body (`content` + an embed).
    Discord,
    /// Mattermost's incoming-webhook body (`text` + an attachment).
    Mattermost,
    /// Google Chat's incoming-webhook body (`text` + a `cardsV2` card).
    GoogleChat,
    /// The target's own `payload_template`.
    Custom,
}

impl PayloadFormat {
    /// Formats of `http` targets (Harbor's two, wharf's `Legacy`, the chat formats and
    /// `Custom`).
    pub const HTTP: [PayloadFormat; 8] = [
        PayloadFormat::Default,
        PayloadFormat::CloudEvents,
        PayloadFormat::Legacy,
        PayloadFormat::Teams,
        PayloadFormat::Discord,
        PayloadFormat::Mattermost,
        PayloadFormat::GoogleChat,
        PayloadFormat::Custom,
    ];
    pub const ALL: [PayloadFormat; 10] = [
        PayloadFormat::Default,
        PayloadFormat::CloudEvents,
        PayloadFormat::Legacy,
        PayloadFormat::Slack,
        PayloadFormat::SlackRich,
        PayloadFormat::Teams,
        PayloadFormat::Discord,
        PayloadFormat::Mattermost,
        PayloadFormat::GoogleChat,
        PayloadFormat::Custom,
    ];
    /// The chat formats (one message per event for a chat tool).
    pub const CHAT: [PayloadFormat; 4] = [
        PayloadFormat::Teams,
        PayloadFormat::Discord,
        PayloadFormat::Mattermost,
        PayloadFormat::GoogleChat,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PayloadFormat::Default => "Default",
            PayloadFormat::CloudEvents => "CloudEvents",
            PayloadFormat::Legacy => "Legacy",
            PayloadFormat::Slack => "Slack",
            PayloadFormat::SlackRich => "SlackRich",
            PayloadFormat::Teams => "Teams",
            PayloadFormat::Discord => "Discord",
            PayloadFormat::Mattermost => "Mattermost",
            PayloadFormat::GoogleChat => "GoogleChat",
            PayloadFormat::Custom => "Custom",
        }
    }

    pub fn parse(s: &str) -> Option<PayloadFormat> {
        PayloadFormat::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Where the payload goes: CloudEvents names its source after the policy, and its `id` after
/// the delivery; chat formats and templates link to the artifact under `external_url`.
#[derive(Debug, Clone, Default)]
pub struct RenderCtx {
    pub project_id: i64,
    pub policy_id: i64,
    /// The delivery (outbox row) the body is for; `None` for a test notification.
    pub delivery_id: Option<i64>,
    /// `external_url` when it is configured (no link is made without it).
    pub external_url: Option<String>,
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
    pub content_type: Cow<'static, str>,
    pub body: Vec<u8>,
}

/// A `Custom` target's template and content type.
#[derive(Debug, Clone, Copy)]
pub struct Custom<'a> {
    pub template: &'a str,
    pub content_type: &'a str,
}

/// Why no payload was made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("payload format Custom needs a payload_template")]
    NoTemplate,
    #[error("payload template: {0}")]
    Template(#[from] TemplateError),
    /// The render thread did not finish (it panicked, or the runtime is shutting down).
    #[error("payload template: the render did not finish: {0}")]
    Aborted(#[source] tokio::task::JoinError),
}

/// Media type key of Harbor's `scan_overview`.
pub const SCAN_REPORT_MIME: &str = "application/vnd.security.vulnerability.report; version=1.1";

/// Render `event` as `format` (`custom`: the template of a `Custom` target). Only `Custom` can
/// fail.
pub fn render(
    event: &Event,
    format: PayloadFormat,
    custom: Option<Custom<'_>>,
    ctx: &RenderCtx,
) -> Result<Payload, RenderError> {
    let chat = || {
        chat::summarize(
            event,
            chat::artifact_link(event, ctx.external_url.as_deref()),
        )
    };
    let (content_type, value) = match format {
        PayloadFormat::Default => {
            return Ok(Payload {
                content_type: Cow::Borrowed("application/json"),
                body: serde_json::to_vec(&data::DefaultPayload::of(event)).unwrap_or_default(),
            });
        }
        PayloadFormat::CloudEvents => ("application/cloudevents+json", cloudevents(event, ctx)),
        PayloadFormat::Legacy => ("application/json", legacy::legacy(event)),
        PayloadFormat::Slack => ("application/json", slack::slack(event)),
        PayloadFormat::SlackRich => ("application/json", slack::slack_rich(event)),
        PayloadFormat::Teams => ("application/json", chat::teams::render(&chat())),
        PayloadFormat::Discord => ("application/json", chat::discord::render(&chat())),
        PayloadFormat::Mattermost => ("application/json", chat::mattermost::render(&chat())),
        PayloadFormat::GoogleChat => ("application/json", chat::googlechat::render(&chat())),
        PayloadFormat::Custom => {
            let c = custom.ok_or(RenderError::NoTemplate)?;
            return Ok(template::render(c.template, c.content_type, event, ctx)?);
        }
    };
    Ok(Payload {
        content_type: Cow::Borrowed(content_type),
        body: serde_json::to_vec(&value).unwrap_or_default(),
    })
}

fn put<T: Serialize>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.to_string(), json!(v));
    }
}

fn repo_type(e: &Event) -> &'static str {
    if e.public { "public" } else { "private" }
}

/// Harbor's `event_data` as a JSON value: shared by CloudEvents, (as text) Slack and the
/// templates' data (see `data::EventData`, which the Default payload serializes directly).
pub fn event_data(e: &Event) -> Value {
    serde_json::to_value(data::EventData::of(e)).unwrap_or(Value::Null)
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

/// The Default payload as a JSON value (the data of `Custom` templates; a delivery in the
/// Default format serializes [`data::DefaultPayload`] directly).
pub(crate) fn default_payload(e: &Event) -> Value {
    serde_json::to_value(data::DefaultPayload::of(e)).unwrap_or(Value::Null)
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
