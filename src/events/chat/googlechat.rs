//! `GoogleChat`: an incoming-webhook message with `text` (the one-line summary: what
//! notifications show) and a `cardsV2` card: a header (action and subject), a section of
//! `decoratedText` facts, for a scan a section with the counts and the top vulnerabilities
//! (`textParagraph`), for a quota event its sentence, and an "Open artifact" button when there
//! is a link.
//!
//! Card texts are Google Chat's HTML subset: user-supplied text is HTML-escaped. In `text`, `<`
//! and `>` of user-supplied text become `‹` `›`, so an operator named `<users/all>` mentions
//! nobody. Google Chat's documented limits: a message of at most 32,000 bytes, text of at most
//! 4,096 characters, at most 100 widgets per section.

use serde_json::{Value, json};

use super::{Summary, truncate_chars};

/// Google Chat's limit of a whole message (bytes).
pub const MESSAGE_BYTES: usize = 32_000;

/// Characters of `text` wharf sends (Google Chat's limit: 4,096).
pub const TEXT_CHARS: usize = 4096;

/// Widgets per section (Google Chat's limit: 100).
pub const SECTION_WIDGETS: usize = 100;

/// HTML-escaped (`&`, `<`, `>`, `"`, `'`).
fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Plain `text` without mention syntax.
fn plain(text: &str) -> String {
    text.replace('<', "‹").replace('>', "›")
}

fn link(url: &str, label: &str) -> String {
    format!("<a href=\"{}\">{}</a>", html(url), html(label))
}

/// The Google Chat message of `s`.
pub fn render(s: &Summary) -> Value {
    let mut facts: Vec<Value> = s
        .facts
        .iter()
        .map(|f| json!({"decoratedText": {"topLabel": f.label, "text": html(&f.value), "wrapText": true}}))
        .collect();
    facts.truncate(SECTION_WIDGETS);
    let mut sections = vec![json!({"widgets": facts})];
    if let Some(q) = &s.quota_details {
        sections.push(json!({"widgets": [{"textParagraph": {"text": html(q)}}]}));
    }
    if let Some(scan) = &s.scan {
        let counts: Vec<String> = scan
            .counts
            .iter()
            .map(|(sev, n)| format!("<b>{sev}</b> {n}"))
            .collect();
        let mut widgets = vec![json!({"textParagraph": {"text": format!(
            "{} ({} fixable): {}",
            scan.total,
            scan.fixable,
            counts.join(" · ")
        )}})];
        for c in &scan.top {
            let id = match &c.link {
                Some(l) => link(l, &c.id),
                None => html(&c.id),
            };
            let mut line = format!("<b>{}</b> {id}", html(c.severity.name()));
            if let Some(p) = &c.package {
                line.push_str(&format!(" in {}", html(p)));
            }
            if let Some(f) = &c.fix_version {
                line.push_str(&format!(", fixed in {}", html(f)));
            }
            if let Some(l) = &c.fix_link {
                line.push_str(&format!(" ({})", link(l, "fix")));
            }
            if let Some(d) = &c.description {
                line.push_str(&format!(": {}", html(d)));
            }
            widgets.push(json!({"textParagraph": {"text": line}}));
        }
        if scan.more > 0 || scan.truncated {
            let mut more = format!("…and {} more", scan.more);
            if scan.truncated {
                more.push_str(" (the report had more than wharf keeps)");
            }
            widgets.push(json!({"textParagraph": {"text": more}}));
        }
        sections.push(json!({"header": "Vulnerabilities", "widgets": widgets}));
    }
    if let Some(l) = &s.link {
        sections.push(json!({"widgets": [{"buttonList": {"buttons": [
            {"text": "Open artifact", "onClick": {"openLink": {"url": l}}}
        ]}}]}));
    }
    json!({
        "text": truncate_chars(&plain(&s.one_line()), TEXT_CHARS),
        "cardsV2": [{
            "cardId": format!("wharf-{}", s.event_id),
            "card": {
                "header": {"title": s.action, "subtitle": s.subject},
                "sections": sections,
            },
        }],
    })
}
