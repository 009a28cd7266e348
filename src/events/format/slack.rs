//! `Slack` (Harbor's message) and `SlackRich` (wharf's Block Kit layout).

use serde::Serialize;
use serde_json::{Value, json};

use super::{event_data, repo_type, rfc3339};
use crate::events::Event;

/// Slack section text is limited to 3000 characters.
const SLACK_TEXT_MAX: usize = 2900;

/// Harbor's Slack message: six mrkdwn sections (see the module doc). Harbor does not shorten
/// the event data; Slack refuses a section over 3,000 characters, so wharf cuts it (marked).
pub(super) fn slack(e: &Event) -> Value {
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
pub(super) fn slack_rich(e: &Event) -> Value {
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
