//! `Mattermost`: an incoming-webhook body, `text` (markdown) + one attachment (Slack-style:
//! `fallback`, `color`, `title`, `title_link`, `text`, `fields`, `footer`).
//!
//! Mattermost's documented limit is 16,383 characters per post (its `MaxMessageSize`); wharf
//! keeps the text and the attachment's text within 4,000 characters each and every field value
//! within [`super::FACT_CHARS`], so the post stays far below. User-supplied text is
//! markdown-escaped and `@` gets a word joiner after it: an operator named `@channel` notifies
//! nobody.

use serde_json::{Value, json};

use super::{Summary, md_code, md_escape, truncate_chars};

/// Characters of `text` and of the attachment's `text`, each.
pub const TEXT_CHARS: usize = 4000;

/// Mattermost's limit of a post (its `MaxMessageSize`, in characters).
pub const POST_CHARS: usize = 16_383;

/// Mentions defused: a word joiner after every `@`.
fn defused(text: &str) -> String {
    text.replace('@', "@\u{2060}")
}

/// Markdown-escaped, with mentions defused.
fn safe(text: &str) -> String {
    defused(&md_escape(text))
}

/// The Mattermost message of `s`.
pub fn render(s: &Summary) -> Value {
    let text = format!(
        "#### {}: {}\n{}",
        safe(&s.action),
        md_code(&s.subject),
        safe(&s.byline())
    );
    let fields: Vec<Value> = s
        .facts
        .iter()
        .map(|f| {
            let value = if f.code {
                md_code(&f.value)
            } else {
                safe(&f.value)
            };
            json!({"short": !f.code, "title": f.label, "value": value})
        })
        .collect();
    let mut body = String::new();
    if let Some(q) = &s.quota_details {
        body.push_str(&safe(q));
    }
    if let Some(scan) = &s.scan {
        let counts: Vec<String> = scan
            .counts
            .iter()
            .map(|(sev, n)| format!("{sev} {n}"))
            .collect();
        body.push_str(&format!(
            "**Vulnerabilities: {} ({} fixable)**: {}\n",
            scan.total,
            scan.fixable,
            counts.join(" · ")
        ));
        for c in &scan.top {
            let id = match &c.link {
                Some(l) => format!("[{}]({l})", safe(&c.id)),
                None => safe(&c.id),
            };
            let mut line = format!("- **{}** {id}", safe(c.severity.name()));
            if let Some(p) = &c.package {
                line.push_str(&format!(" in {}", safe(p)));
            }
            if let Some(f) = &c.fix_version {
                line.push_str(&format!(", fixed in {}", safe(f)));
            }
            if let Some(l) = &c.fix_link {
                line.push_str(&format!(" ([fix]({l}))"));
            }
            if let Some(d) = &c.description {
                line.push_str(&format!(": {}", safe(d)));
            }
            body.push_str(&line);
            body.push('\n');
        }
        if scan.more > 0 || scan.truncated {
            body.push_str(&format!("…and {} more", scan.more));
            if scan.truncated {
                body.push_str(" (the report had more than wharf keeps)");
            }
        }
    }
    let mut attachment = json!({
        "fallback": format!("{} by {}", s.headline(), defused(&s.operator)),
        "color": s.tone.hex(),
        "title": s.headline(),
        "text": truncate_chars(body.trim_end(), TEXT_CHARS),
        "fields": fields,
        "footer": format!("wharf · event {}", s.event_id),
    });
    if let (Some(link), Some(obj)) = (&s.link, attachment.as_object_mut()) {
        obj.insert("title_link".into(), json!(link));
    }
    json!({
        "text": truncate_chars(&text, TEXT_CHARS),
        "attachments": [attachment],
    })
}
