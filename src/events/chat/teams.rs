//! `Teams`: an Adaptive Card 1.5 in the envelope Microsoft Teams' Workflows webhooks ("Post to
//! a channel when a webhook request is received") take:
//! `{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
//! "contentUrl": null, "content": <card>}]}`.
//!
//! The card: a heading in the tone's colour, a subtle by-line, a `FactSet` of the facts, for a
//! scan the counts by severity (a `FactSet`) and the top vulnerabilities (one `TextBlock` each,
//! Teams' markdown links), for a quota event its sentence, and an `Action.OpenUrl` "Open
//! artifact" when there is a link. Only elements and properties of Adaptive Cards 1.5 (checked
//! by the npm `adaptivecards` parser in the tests).

use serde_json::{Value, json};

use super::{Summary, Tone};

/// The envelope's attachment content type.
pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";

/// Adaptive Cards version of the card.
pub const CARD_VERSION: &str = "1.5";

fn color(t: Tone) -> &'static str {
    match t {
        Tone::Good => "Good",
        Tone::Neutral => "Default",
        Tone::Warning => "Warning",
        Tone::Attention => "Attention",
    }
}

fn text(t: impl Into<String>) -> Value {
    json!({"type": "TextBlock", "text": t.into(), "wrap": true})
}

/// The Teams message of `s`.
pub fn render(s: &Summary) -> Value {
    let mut body = vec![
        json!({
            "type": "TextBlock",
            "text": s.headline(),
            "style": "heading",
            "size": "Large",
            "weight": "Bolder",
            "color": color(s.tone),
            "wrap": true,
        }),
        json!({
            "type": "TextBlock",
            "text": s.byline(),
            "isSubtle": true,
            "spacing": "None",
            "wrap": true,
        }),
        json!({
            "type": "FactSet",
            "facts": s.facts.iter().map(|f| json!({"title": f.label, "value": f.value})).collect::<Vec<_>>(),
        }),
    ];
    if let Some(q) = &s.quota_details {
        body.push(text(q.clone()));
    }
    if let Some(scan) = &s.scan {
        body.push(json!({
            "type": "TextBlock",
            "text": format!("Vulnerabilities: {} ({} fixable)", scan.total, scan.fixable),
            "weight": "Bolder",
            "separator": true,
            "wrap": true,
        }));
        body.push(json!({
            "type": "FactSet",
            "facts": scan.counts.iter().map(|(sev, n)| json!({"title": sev, "value": n.to_string()})).collect::<Vec<_>>(),
        }));
        for c in &scan.top {
            let id = match &c.link {
                Some(l) => format!("[{}]({l})", c.id),
                None => c.id.clone(),
            };
            let mut line = format!("**{}** {id}", c.severity);
            if let Some(p) = &c.package {
                line.push_str(&format!(" in {p}"));
            }
            if let Some(f) = &c.fix_version {
                line.push_str(&format!(", fixed in {f}"));
            }
            if let Some(l) = &c.fix_link {
                line.push_str(&format!(" ([fix]({l}))"));
            }
            if let Some(d) = &c.description {
                line.push_str(&format!(": {d}"));
            }
            body.push(text(line));
        }
        if scan.more > 0 || scan.truncated {
            body.push(json!({
                "type": "TextBlock",
                "text": format!("…and {} more{}", scan.more, if scan.truncated { " (the report had more than wharf keeps)" } else { "" }),
                "isSubtle": true,
                "wrap": true,
            }));
        }
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    });
    if let (Some(link), Some(obj)) = (&s.link, card.as_object_mut()) {
        obj.insert(
            "actions".into(),
            json!([{"type": "Action.OpenUrl", "title": "Open artifact", "url": link}]),
        );
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": CARD_CONTENT_TYPE,
            "contentUrl": null,
            "content": card,
        }],
    })
}
