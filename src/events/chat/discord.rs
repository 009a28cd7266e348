//! `Discord`: an execute-webhook body, `content` + one embed, within Discord's documented limits
//! (<https://discord.com/developers/docs/resources/message#embed-object-embed-limits>): content
//! 2,000 characters; at most 10 embeds; title 256, description 4,096, at most 25 fields with
//! names of 256 and values of 1,024, footer text 2,048, author name 256; title, description,
//! field names and values, footer and author together at most 6,000 characters.
//!
//! Lengths are counted in UTF-16 code units (what a JavaScript `length` counts; never fewer than
//! the characters), and text is cut on character boundaries with a `…`. When the whole embed
//! would pass 6,000, the longest texts (description first) are shortened until it fits.
//! `allowed_mentions` is empty: an operator named `@everyone` pings nobody.

use serde_json::{Value, json};

use super::{Summary, md_code, md_escape};

/// Discord's limits (characters).
pub mod limits {
    pub const CONTENT: usize = 2000;
    pub const EMBEDS: usize = 10;
    pub const TITLE: usize = 256;
    pub const DESCRIPTION: usize = 4096;
    pub const FIELDS: usize = 25;
    pub const FIELD_NAME: usize = 256;
    pub const FIELD_VALUE: usize = 1024;
    pub const FOOTER: usize = 2048;
    pub const AUTHOR: usize = 256;
    /// Title, description, field names and values, footer text and author name of all embeds.
    pub const TOTAL: usize = 6000;
}

/// Length as Discord counts it (UTF-16 code units: never fewer than the characters).
pub fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `s` within `max` units, cut on a character boundary with a `…`.
pub fn fit(s: &str, max: usize) -> String {
    if units(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    let budget = max.saturating_sub(1); // the `…` is one unit
    for c in s.chars() {
        if used + c.len_utf16() > budget {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// One embed being built, with its texts as Discord counts them.
struct Embed {
    title: String,
    description: String,
    fields: Vec<(String, String, bool)>,
    footer: String,
}

impl Embed {
    fn total(&self) -> usize {
        units(&self.title)
            + units(&self.description)
            + self
                .fields
                .iter()
                .map(|(n, v, _)| units(n) + units(v))
                .sum::<usize>()
            + units(&self.footer)
    }

    /// Shorten the longest texts until the embed is within [`limits::TOTAL`].
    fn shrink_to_total(&mut self) {
        const FLOOR: usize = 32;
        while self.total() > limits::TOTAL {
            let excess = self.total() - limits::TOTAL;
            // the longest of description and field values
            let mut longest: (usize, Option<usize>) = (units(&self.description), None);
            for (i, (_, v, _)) in self.fields.iter().enumerate() {
                if units(v) > longest.0 {
                    longest = (units(v), Some(i));
                }
            }
            if longest.0 <= FLOOR {
                // nothing long is left: drop fields from the end
                if self.fields.pop().is_none() {
                    self.description.clear();
                    self.footer.clear();
                    self.title = fit(&self.title, FLOOR);
                    return;
                }
                continue;
            }
            let keep = longest.0.saturating_sub(excess).max(FLOOR);
            match longest.1 {
                None => self.description = fit(&self.description, keep),
                Some(i) => self.fields[i].1 = fit(&self.fields[i].1, keep),
            }
        }
    }
}

/// The Discord message of `s`.
pub fn render(s: &Summary) -> Value {
    let mut fields: Vec<(String, String, bool)> = s
        .facts
        .iter()
        .map(|f| {
            let v = if f.code {
                md_code(&f.value)
            } else {
                md_escape(&f.value)
            };
            (
                fit(f.label, limits::FIELD_NAME),
                fit(&v, limits::FIELD_VALUE),
                !f.code,
            )
        })
        .collect();
    let mut description = md_escape(&s.byline());
    if let Some(q) = &s.quota_details {
        description.push_str("\n\n");
        description.push_str(&md_escape(q));
    }
    if let Some(scan) = &s.scan {
        for (sev, n) in scan.counts {
            fields.push((sev.to_string(), n.to_string(), true));
        }
        description.push_str(&format!(
            "\n\n**Vulnerabilities: {} ({} fixable)**",
            scan.total, scan.fixable
        ));
        for c in &scan.top {
            let id = match &c.link {
                Some(l) => format!("[{}]({l})", md_escape(&c.id)),
                None => md_escape(&c.id),
            };
            let mut line = format!("\n- **{}** {id}", md_escape(c.severity.name()));
            if let Some(p) = &c.package {
                line.push_str(&format!(" in {}", md_escape(p)));
            }
            if let Some(f) = &c.fix_version {
                line.push_str(&format!(", fixed in {}", md_escape(f)));
            }
            if let Some(l) = &c.fix_link {
                line.push_str(&format!(" ([fix]({l}))"));
            }
            if let Some(d) = &c.description {
                line.push_str(&format!(": {}", md_escape(d)));
            }
            description.push_str(&line);
        }
        if scan.more > 0 || scan.truncated {
            description.push_str(&format!("\n…and {} more", scan.more));
            if scan.truncated {
                description.push_str(" (the report had more than wharf keeps)");
            }
        }
    }
    fields.truncate(limits::FIELDS);
    let mut embed = Embed {
        title: fit(&s.headline(), limits::TITLE),
        description: fit(&description, limits::DESCRIPTION),
        fields,
        footer: fit(&format!("wharf · event {}", s.event_id), limits::FOOTER),
    };
    embed.shrink_to_total();
    let mut e = json!({
        "title": embed.title,
        "description": embed.description,
        "color": s.tone.rgb(),
        "timestamp": s.time,
        "fields": embed.fields.iter().map(|(n, v, inline)| json!({"name": n, "value": v, "inline": inline})).collect::<Vec<_>>(),
        "footer": {"text": embed.footer},
    });
    if let (Some(link), Some(obj)) = (&s.link, e.as_object_mut()) {
        obj.insert("url".into(), json!(link));
    }
    let content = format!(
        "**{}**: {} by {}",
        md_escape(&s.action),
        md_code(&s.subject),
        md_escape(&s.operator)
    );
    json!({
        "content": fit(&content, limits::CONTENT),
        "embeds": [e],
        "allowed_mentions": {"parse": []},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_counts_utf16_and_cuts_on_char_boundaries() {
        assert_eq!(fit("abc", 3), "abc");
        assert_eq!(fit("abcd", 3), "ab…");
        // 😀 is two UTF-16 units
        let s = "😀😀😀";
        let f = fit(s, 4);
        assert!(units(&f) <= 4, "{f}");
        assert_eq!(f, "😀…");
        assert_eq!(fit("x", 0), "");
    }

    #[test]
    fn an_embed_over_the_total_is_shrunk_longest_first() {
        let mut e = Embed {
            title: "t".repeat(256),
            description: "d".repeat(4096),
            fields: (0..25)
                .map(|i| (format!("f{i}"), "v".repeat(1024), true))
                .collect(),
            footer: "f".repeat(100),
        };
        e.shrink_to_total();
        assert!(e.total() <= limits::TOTAL, "{}", e.total());
        assert!(!e.fields.is_empty());
    }
}
