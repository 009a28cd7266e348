//! Chat formats: one message per event for the chat tools people point webhooks at.
//!
//! Every chat format shows the same [`Summary`] of the event: a headline (`Artifact pushed:
//! prj/repo1:latest`), the facts the seed lists for the event's type (repository, tags, digest,
//! image or chart, size, operator, time; scan status, counts by severity, scanner, error and the
//! top vulnerabilities; quota details, usage and limit), and a link to the artifact when
//! `external_url` is set. Each platform module lays it out as the platform takes it and keeps
//! it within the platform's documented limits:
//!
//! - [`teams`]: an Adaptive Card 1.5 in the envelope of Teams' Workflows webhooks;
//! - [`discord`]: `content` + one embed (Discord's limits: 10 embeds, title 256, description
//!   4096, 25 fields of 256/1024, footer 2048, 6000 characters in all);
//! - [`mattermost`]: `text` + one attachment with fields;
//! - [`googlechat`]: `text` + a `cardsV2` card.

pub mod discord;
pub mod googlechat;
pub mod mattermost;
pub mod teams;

use crate::config::bytesize::human;
use crate::events::{Event, EventKind, ScanInfo, ScanStatus, ScanType, Severity, Vulnerability};

/// How many vulnerabilities a chat message lists (the most severe first).
pub const TOP_CVES: usize = 5;

/// A vulnerability description is cut to this many characters in a chat message.
pub const DESCRIPTION_CHARS: usize = 200;

/// A fact's value is cut to this many characters (a long error, many tags), and so are a
/// quota event's sentence and the operator.
pub const FACT_CHARS: usize = 500;

/// The operator is cut to this many characters in headlines.
pub const OPERATOR_CHARS: usize = 100;

/// The link to an artifact (or chart archive) when `external_url` is set: the manifest URL
/// (by digest when known) on wharf, or a classic chart's download URL.
pub fn artifact_link(e: &Event, external_url: Option<&str>) -> Option<String> {
    let base = external_url?.trim_end_matches('/');
    if base.is_empty() {
        return None;
    }
    // a classic chart's resource URL is `<host>/chartrepo/<p>/charts/<file>`: the same path
    if let Some(i) = e.resource_url.find("/chartrepo/") {
        return Some(format!("{base}{}", &e.resource_url[i..]));
    }
    let reference = e.digest.as_deref().or(e.tag())?;
    Some(format!("{base}/v2/{}/manifests/{reference}", e.repository))
}

/// What a message's colour says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Something new arrived (push, upload, a clean scan).
    Good,
    /// Routine (pull, download).
    Neutral,
    /// Worth a look (a scan with High findings, a stopped scan, a quota warning).
    Warning,
    /// Act (a delete, a failed scan, Critical findings, an exceeded quota).
    Attention,
}

impl Tone {
    /// RGB colour.
    pub fn rgb(self) -> u32 {
        match self {
            Tone::Good => 0x2E_B6_7D,
            Tone::Neutral => 0x5B_6B_7F,
            Tone::Warning => 0xEC_B2_2E,
            Tone::Attention => 0xE0_1E_5A,
        }
    }

    /// `#rrggbb`.
    pub fn hex(self) -> String {
        format!("#{:06X}", self.rgb())
    }
}

/// One labelled fact (`Repository: prj/repo1`). `code`: show the value as code (digests,
/// references).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub label: &'static str,
    pub value: String,
    pub code: bool,
}

/// A vulnerability as a chat message shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cve {
    pub id: String,
    pub severity: Severity,
    /// `libssl3 3.0.7-r0` (package and installed version, when known).
    pub package: Option<String>,
    pub fix_version: Option<String>,
    /// Cut to [`DESCRIPTION_CHARS`].
    pub description: Option<String>,
    pub link: Option<String>,
    pub fix_link: Option<String>,
}

/// The scan part of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPart {
    /// Counts by severity, most severe first: (`Critical`, 1), …, (`Unknown`, 0).
    pub counts: [(&'static str, u64); 5],
    pub total: u64,
    pub fixable: u64,
    /// The most severe vulnerabilities, at most [`TOP_CVES`].
    pub top: Vec<Cve>,
    /// How many known vulnerabilities are not in `top` (the report may have had more than
    /// wharf kept: `truncated`).
    pub more: usize,
    pub truncated: bool,
}

/// Everything a chat message shows about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub kind: EventKind,
    /// `Artifact pushed` (`Test: …` for a test notification).
    pub action: String,
    /// What it happened to: `prj/repo1:latest`, `prj/mychart:0.1.0`, or the repository.
    pub subject: String,
    pub operator: String,
    /// RFC 3339, whole seconds.
    pub time: String,
    pub facts: Vec<Fact>,
    /// Vulnerability scans with findings, or completed.
    pub scan: Option<ScanPart>,
    /// A quota event's sentence (Harbor's wording).
    pub quota_details: Option<String>,
    /// The artifact on wharf, when `external_url` is set.
    pub link: Option<String>,
    pub tone: Tone,
    pub event_id: String,
}

impl Summary {
    /// `Artifact pushed: prj/repo1:latest`.
    pub fn headline(&self) -> String {
        format!("{}: {}", self.action, self.subject)
    }

    /// One line: `Artifact pushed: prj/repo1:latest by alice`.
    pub fn one_line(&self) -> String {
        format!("{} by {}", self.headline(), self.operator)
    }

    /// `PUSH_ARTIFACT by alice at 2023-11-14T22:13:20Z`.
    pub fn byline(&self) -> String {
        format!(
            "{} by {} at {}",
            self.kind.harbor_type(),
            self.operator,
            self.time
        )
    }
}

fn action(kind: EventKind) -> &'static str {
    match kind {
        EventKind::PushArtifact => "Artifact pushed",
        EventKind::PullArtifact => "Artifact pulled",
        EventKind::DeleteArtifact => "Artifact deleted",
        EventKind::UploadChart => "Chart uploaded",
        EventKind::DownloadChart => "Chart downloaded",
        EventKind::DeleteChart => "Chart deleted",
        EventKind::ScanningCompleted => "Scan completed",
        EventKind::ScanningFailed => "Scan failed",
        EventKind::ScanningStopped => "Scan stopped",
        EventKind::QuotaExceed => "Quota exceeded",
        EventKind::QuotaWarning => "Quota warning",
        EventKind::Replication => "Replication",
        EventKind::TagRetention => "Tag retention",
    }
}

fn tone(e: &Event) -> Tone {
    match e.kind {
        EventKind::PushArtifact | EventKind::UploadChart => Tone::Good,
        EventKind::PullArtifact
        | EventKind::DownloadChart
        | EventKind::Replication
        | EventKind::TagRetention => Tone::Neutral,
        EventKind::DeleteArtifact
        | EventKind::DeleteChart
        | EventKind::ScanningFailed
        | EventKind::QuotaExceed => Tone::Attention,
        EventKind::ScanningStopped | EventKind::QuotaWarning => Tone::Warning,
        EventKind::ScanningCompleted => match &e.scan {
            Some(s) if s.counts.critical > 0 => Tone::Attention,
            Some(s) if s.counts.high > 0 => Tone::Warning,
            _ => Tone::Good,
        },
    }
}

/// `text` cut to `max` characters (a `…` in place of the rest).
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Markdown-escape `text` (Discord's and Mattermost's markdown): every character that could
/// start emphasis, code, a link, a table or a heading gets a backslash.
pub fn md_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '~' | '`' | '|' | '[' | ']' | '<' | '>' | '#'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` as inline code (a backquote inside becomes `'`: a code span cannot hold one safely).
pub fn md_code(text: &str) -> String {
    format!("`{}`", text.replace('`', "'"))
}

fn cve(v: &Vulnerability) -> Cve {
    let package = match (&v.package, &v.version) {
        (Some(p), Some(ver)) => Some(format!("{p} {ver}")),
        (Some(p), None) => Some(p.clone()),
        _ => None,
    };
    Cve {
        id: v.id.clone(),
        severity: v.severity,
        package,
        fix_version: v.fix_version.clone(),
        description: v
            .description
            .as_deref()
            .map(|d| truncate_chars(d.trim(), DESCRIPTION_CHARS)),
        link: v.link.clone(),
        fix_link: v.fix_link.clone(),
    }
}

fn scan_part(s: &ScanInfo) -> ScanPart {
    let mut vulns: Vec<&Vulnerability> = s.vulnerabilities.iter().collect();
    vulns.sort_by_key(|v| std::cmp::Reverse(v.severity));
    let top: Vec<Cve> = vulns.iter().take(TOP_CVES).map(|v| cve(v)).collect();
    ScanPart {
        counts: Severity::RATED.map(|sev| (sev.name(), s.counts.of(sev))),
        total: s.counts.total,
        fixable: s.counts.fixable,
        more: vulns.len().saturating_sub(top.len()),
        top,
        truncated: s.vulnerabilities_truncated,
    }
}

fn size_text(bytes: u64) -> String {
    format!("{bytes} bytes ({})", human(bytes))
}

/// The summary of `e`; `link` from [`artifact_link`].
pub fn summarize(e: &Event, link: Option<String>) -> Summary {
    let chart = e.chart.as_ref().filter(|_| e.kind.is_chart());
    let subject = match chart {
        Some(c) if !c.name.is_empty() => format!("{}/{}:{}", e.project, c.name, c.version),
        _ => e.image_name(),
    };
    let mut facts = Vec::new();
    let mut fact = |label: &'static str, value: String, code: bool| {
        facts.push(Fact {
            label,
            value: truncate_chars(&value, FACT_CHARS),
            code,
        });
    };
    fact("Event type", e.kind.harbor_type().to_string(), false);
    fact(
        "Project",
        format!(
            "{} ({})",
            e.project,
            if e.public { "public" } else { "private" }
        ),
        false,
    );
    fact("Repository", e.repository.clone(), false);
    if let Some(c) = chart {
        fact("Chart", format!("{} {}", c.name, c.version), false);
        let mut kind = c.chart_type.clone();
        if let Some(app) = &c.app_version {
            kind.push_str(&format!(", app version {app}"));
        }
        fact("Chart type", kind, false);
    } else if !e.kind.is_chart() {
        fact("Image", e.image_name(), true);
    }
    if !e.tags.is_empty() {
        fact("Tags", e.tags.join(", "), false);
    }
    if let Some(d) = &e.digest {
        fact("Digest", d.clone(), true);
    }
    if let Some(size) = chart.and_then(|c| c.size).or(e.size) {
        fact("Size", size_text(size), false);
    }
    if !e.platforms.is_empty() {
        fact("Platforms", e.platforms.join(", "), false);
    }
    if !e.resource_url.is_empty() {
        fact("Resource URL", e.resource_url.clone(), true);
    }
    fact("Operator", e.operator.clone(), false);
    let time = e
        .occurred_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    fact("Time", time.clone(), false);
    let mut scan = None;
    if let Some(s) = &e.scan {
        let status = match (s.status, s.scan_type) {
            (ScanStatus::Success, ScanType::Vulnerability) => {
                format!("{} (highest severity: {})", s.status.name(), s.severity)
            }
            _ => s.status.name().to_string(),
        };
        fact("Scan status", status, false);
        fact("Scan type", s.scan_type.name().to_string(), false);
        fact(
            "Completed",
            s.completed_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            false,
        );
        if let Some(sc) = &s.scanner {
            fact(
                "Scanner",
                format!("{} {} ({})", sc.name, sc.version, sc.vendor),
                false,
            );
        }
        if let Some(d) = &s.sbom_digest {
            fact("SBOM digest", d.clone(), true);
        }
        if let Some(err) = &s.error {
            fact("Error", err.clone(), false);
        }
        if s.scan_type == ScanType::Vulnerability && s.status == ScanStatus::Success {
            scan = Some(scan_part(s));
        }
    }
    if let Some(q) = &e.quota {
        if let Some(usage) = q.usage {
            fact("Usage", size_text(usage), false);
        }
        if let Some(limit) = q.limit {
            fact("Limit", size_text(limit), false);
        }
        if let Some(adding) = q.adding {
            fact("Adding", size_text(adding), false);
        }
    }
    let mut action = action(e.kind).to_string();
    if e.test {
        action.insert_str(0, "Test: ");
    }
    Summary {
        kind: e.kind,
        action,
        subject,
        operator: truncate_chars(&e.operator, OPERATOR_CHARS),
        time,
        facts,
        scan,
        quota_details: e
            .quota
            .as_ref()
            .map(|q| truncate_chars(&q.details, FACT_CHARS)),
        link,
        tone: tone(e),
        event_id: e.id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::format::samples;

    fn sample(name: &str) -> Event {
        samples()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, e)| e)
            .unwrap()
    }

    #[test]
    fn links_point_at_the_manifest_by_digest_or_the_chart_archive() {
        let e = sample("push_artifact");
        assert_eq!(artifact_link(&e, None), None);
        assert_eq!(
            artifact_link(&e, Some("https://registry.example.com/")).unwrap(),
            format!(
                "https://registry.example.com/v2/prj/repo1/manifests/{}",
                e.digest.clone().unwrap()
            )
        );
        let mut classic = sample("upload_chart");
        classic.digest = None;
        classic.resource_url = "registry.example.com/chartrepo/prj/charts/mychart-0.1.0.tgz".into();
        assert_eq!(
            artifact_link(&classic, Some("https://registry.example.com")).unwrap(),
            "https://registry.example.com/chartrepo/prj/charts/mychart-0.1.0.tgz"
        );
        let mut tag_only = sample("pull_artifact");
        tag_only.digest = None;
        assert_eq!(
            artifact_link(&tag_only, Some("https://r.example")).unwrap(),
            "https://r.example/v2/prj/repo1/manifests/latest"
        );
    }

    #[test]
    fn the_most_severe_vulnerabilities_come_first_and_the_rest_is_counted() {
        let mut e = sample("scanning_completed");
        let base = e.scan.as_ref().unwrap().vulnerabilities[0].clone();
        let mk = |id: &str, severity: Severity| Vulnerability {
            id: id.into(),
            severity,
            ..base.clone()
        };
        e.scan.as_mut().unwrap().vulnerabilities = vec![
            mk("L1", Severity::Low),
            mk("U1", Severity::Unknown),
            mk("H1", Severity::High),
            mk("C1", Severity::Critical),
            mk("M1", Severity::Medium),
            mk("H2", Severity::High),
            mk("C2", Severity::Critical),
        ];
        let s = summarize(&e, None);
        let scan = s.scan.unwrap();
        let ids: Vec<&str> = scan.top.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["C1", "C2", "H1", "H2", "M1"]);
        assert_eq!(scan.more, 2);
        assert_eq!(s.tone, Tone::Attention);
    }

    #[test]
    fn descriptions_are_cut_on_character_boundaries() {
        let long = "é".repeat(500);
        let t = truncate_chars(&long, DESCRIPTION_CHARS);
        assert_eq!(t.chars().count(), DESCRIPTION_CHARS);
        assert!(t.ends_with('…'));
        assert_eq!(truncate_chars("short", 10), "short");
    }

    #[test]
    fn test_notifications_say_so() {
        let mut e = sample("push_artifact");
        e.test = true;
        assert_eq!(
            summarize(&e, None).headline(),
            "Test: Artifact pushed: prj/repo1:latest"
        );
    }
}
