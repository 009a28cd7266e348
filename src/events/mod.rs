//! Events: the one model of "something happened", and its payload formats.
//!
//! An [`Event`] is built by `observe` (registry and chart traffic) or by the side endpoint (scan,
//! quota) only after the upstream answered success. Its `id` is a UUIDv7 fixed at creation; every
//! delivery attempt of every target carries the same id. Payload shapes live in [`format`](mod@format), as
//! pure functions `(event, context) → bytes + content type`; the chat formats in [`chat`], the
//! custom payload templates in [`template`]. An event's operator (who made the request: Basic
//! user, verified Bearer token, or anonymous) comes from [`operator`].

pub mod chat;
pub mod format;
pub mod operator;
pub mod scan;
pub mod sink;
pub mod template;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The kinds of events, named as Harbor 2.x names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    /// IMAGE PUSH: a manifest PUT answered 201.
    PushArtifact,
    /// IMAGE PULL: a manifest GET answered 200 and the body was sent completely.
    PullArtifact,
    /// IMAGE DELETE: a manifest DELETE answered 202.
    DeleteArtifact,
    /// CHART PUSH: a Helm chart uploaded (OCI or ChartMuseum).
    UploadChart,
    /// CHART PULL: a Helm chart downloaded (OCI or ChartMuseum).
    DownloadChart,
    /// CHART DELETE: a Helm chart deleted (OCI or ChartMuseum).
    DeleteChart,
    /// IMAGE SCAN COMPLETED, reported on the side endpoint.
    ScanningCompleted,
    /// IMAGE SCAN FAILED, reported on the side endpoint.
    ScanningFailed,
    /// IMAGE SCAN STOPPED: a scan report on the side endpoint says the scan was stopped.
    ScanningStopped,
    /// PROJECT QUOTA EXCEED: a push refused by wharf's quota, or reported on the side endpoint.
    QuotaExceed,
    /// A project's usage crossed the warning threshold.
    QuotaWarning,
    /// Harbor's replication status change: accepted in policies, never produced by wharf (it
    /// does not replicate).
    Replication,
    /// Harbor's tag retention run: accepted in policies, never produced by wharf (it runs no
    /// retention).
    TagRetention,
}

impl EventKind {
    /// Every kind, in a stable order.
    pub const ALL: [EventKind; 13] = [
        EventKind::PushArtifact,
        EventKind::PullArtifact,
        EventKind::DeleteArtifact,
        EventKind::UploadChart,
        EventKind::DownloadChart,
        EventKind::DeleteChart,
        EventKind::ScanningCompleted,
        EventKind::ScanningFailed,
        EventKind::ScanningStopped,
        EventKind::QuotaExceed,
        EventKind::QuotaWarning,
        EventKind::Replication,
        EventKind::TagRetention,
    ];

    /// The types Harbor 2.8+ accepts in a policy, in the order its `…/webhook/events` lists
    /// them (wharf also accepts the chart types of Harbor ≤ 2.7, which it produces).
    pub const HARBOR: [EventKind; 10] = [
        EventKind::PushArtifact,
        EventKind::PullArtifact,
        EventKind::DeleteArtifact,
        EventKind::QuotaExceed,
        EventKind::QuotaWarning,
        EventKind::ScanningFailed,
        EventKind::ScanningStopped,
        EventKind::ScanningCompleted,
        EventKind::Replication,
        EventKind::TagRetention,
    ];

    /// Does wharf ever produce this kind? (REPLICATION and TAG_RETENTION are accepted in
    /// policies for configurations copied from Harbor, and never happen.)
    pub fn produced(self) -> bool {
        !matches!(self, EventKind::Replication | EventKind::TagRetention)
    }

    /// Harbor 2.x `type` (the Default payload, the API's `event_types`).
    pub fn harbor_type(self) -> &'static str {
        match self {
            EventKind::PushArtifact => "PUSH_ARTIFACT",
            EventKind::PullArtifact => "PULL_ARTIFACT",
            EventKind::DeleteArtifact => "DELETE_ARTIFACT",
            EventKind::UploadChart => "UPLOAD_CHART",
            EventKind::DownloadChart => "DOWNLOAD_CHART",
            EventKind::DeleteChart => "DELETE_CHART",
            EventKind::ScanningCompleted => "SCANNING_COMPLETED",
            EventKind::ScanningFailed => "SCANNING_FAILED",
            EventKind::ScanningStopped => "SCANNING_STOPPED",
            EventKind::QuotaExceed => "QUOTA_EXCEED",
            EventKind::QuotaWarning => "QUOTA_WARNING",
            EventKind::Replication => "REPLICATION",
            EventKind::TagRetention => "TAG_RETENTION",
        }
    }

    /// CloudEvents `type`, exactly as Harbor 2.8+ names them (chart names are wharf's choice:
    /// Harbor 2.8 has no chart events).
    pub fn cloudevents_type(self) -> &'static str {
        match self {
            EventKind::PushArtifact => "harbor.artifact.pushed",
            EventKind::PullArtifact => "harbor.artifact.pulled",
            EventKind::DeleteArtifact => "harbor.artifact.deleted",
            EventKind::UploadChart => "harbor.chart.uploaded",
            EventKind::DownloadChart => "harbor.chart.downloaded",
            EventKind::DeleteChart => "harbor.chart.deleted",
            EventKind::ScanningCompleted => "harbor.scan.completed",
            EventKind::ScanningFailed => "harbor.scan.failed",
            EventKind::ScanningStopped => "harbor.scan.stopped",
            EventKind::QuotaExceed => "harbor.quota.exceeded",
            EventKind::QuotaWarning => "harbor.quota.warned",
            EventKind::Replication => "harbor.replication.status.changed",
            EventKind::TagRetention => "harbor.tag_retention.finished",
        }
    }

    /// The seed's (Harbor 1.10 documentation) `event_type`.
    pub fn legacy_type(self) -> &'static str {
        match self {
            EventKind::PushArtifact => "pushImage",
            EventKind::PullArtifact => "pullImage",
            EventKind::DeleteArtifact => "deleteImage",
            EventKind::UploadChart => "uploadChart",
            EventKind::DownloadChart => "downloadChart",
            EventKind::DeleteChart => "deleteChart",
            EventKind::ScanningCompleted => "scanningCompleted",
            EventKind::ScanningFailed => "scanningFailed",
            EventKind::ScanningStopped => "scanningStopped",
            EventKind::QuotaExceed => "projectQuota",
            EventKind::QuotaWarning => "projectQuotaWarning",
            EventKind::Replication => "replication",
            EventKind::TagRetention => "tagRetention",
        }
    }

    /// Parse a Harbor 2.x type name.
    pub fn from_harbor(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.harbor_type() == s)
    }

    /// Is this an artifact or chart event (its payload's repository has `date_created`)?
    pub fn is_artifact(self) -> bool {
        matches!(
            self,
            EventKind::PushArtifact
                | EventKind::PullArtifact
                | EventKind::DeleteArtifact
                | EventKind::UploadChart
                | EventKind::DownloadChart
                | EventKind::DeleteChart
        )
    }

    /// Is this a chart event?
    pub fn is_chart(self) -> bool {
        matches!(
            self,
            EventKind::UploadChart | EventKind::DownloadChart | EventKind::DeleteChart
        )
    }
}

/// Facts about a Helm chart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChartInfo {
    /// Chart name (`Chart.yaml` name).
    pub name: String,
    /// Chart version (`Chart.yaml` version; the tag of an OCI chart).
    pub version: String,
    /// `application` or `library`.
    #[serde(rename = "type")]
    pub chart_type: String,
    /// `Chart.yaml` appVersion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// Size of the chart archive (.tgz) in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Counts of vulnerabilities by severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCounts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub unknown: u64,
    /// All vulnerabilities.
    pub total: u64,
    /// Those with a fixed version.
    pub fixable: u64,
}

impl SeverityCounts {
    /// How many of `severity` (those not rated or `None` are counted as `Unknown`).
    pub fn of(&self, severity: Severity) -> u64 {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
            Severity::Unknown | Severity::None | Severity::NotRated => self.unknown,
        }
    }

    /// Count one vulnerability of `severity`, fixable or not.
    pub fn add(&mut self, severity: Severity, fixable: bool) {
        *self.slot(severity) += 1;
        self.total += 1;
        self.fixable += u64::from(fixable);
    }

    fn slot(&mut self, severity: Severity) -> &mut u64 {
        match severity {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
            Severity::Unknown | Severity::None | Severity::NotRated => &mut self.unknown,
        }
    }
}

/// A vulnerability's severity in Harbor's names, ordered from least to most severe (so the
/// highest severity of a report is the maximum). Read back from its name; a name wharf does not
/// know reads as `Unknown`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(from = "String")]
pub enum Severity {
    /// Not rated: the `severity` of an sbom scan, serialized as the empty string.
    #[default]
    #[serde(rename = "")]
    NotRated,
    /// Nothing was found (a scan's highest severity, never a vulnerability's).
    None,
    /// A name the scanner gave that is none of the others.
    Unknown,
    /// `Low` (and a report's `Negligible`).
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The five a vulnerability can have, most severe first (the order of Harbor's summary).
    pub const RATED: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];

    /// Harbor's name: `Critical` … `Unknown`, `None`, or empty when not rated.
    pub fn name(self) -> &'static str {
        match self {
            Severity::NotRated => "",
            Severity::None => "None",
            Severity::Unknown => "Unknown",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }

    /// A scanner's name for a vulnerability's severity, in any case: `negligible` is `Low`,
    /// anything unknown (or missing) is `Unknown`.
    pub fn from_report(name: &str) -> Severity {
        match name.to_ascii_lowercase().as_str() {
            "critical" => Severity::Critical,
            "high" => Severity::High,
            "medium" => Severity::Medium,
            "low" | "negligible" => Severity::Low,
            _ => Severity::Unknown,
        }
    }
}

impl From<String> for Severity {
    /// Its own name back ([`Severity::name`]); any other name as [`Severity::from_report`].
    fn from(name: String) -> Severity {
        match name.as_str() {
            "" => Severity::NotRated,
            "None" => Severity::None,
            other => Severity::from_report(other),
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One vulnerability of a scan report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Vulnerability {
    /// CVE (or other) identifier.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The version that fixes it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_version: Option<String>,
    /// Critical, High, Medium, Low or Unknown.
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Link to the CVE (first of `links`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// URL for the fix (an advisory or release note), if the report has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_link: Option<String>,
}

/// The scanner that produced a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scanner {
    pub name: String,
    pub vendor: String,
    pub version: String,
}

/// How a scan ended (Harbor's `scan_status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScanStatus {
    /// SCANNING_COMPLETED.
    #[default]
    Success,
    /// SCANNING_FAILED.
    Error,
    /// SCANNING_STOPPED.
    Stopped,
}

impl ScanStatus {
    /// Harbor's name (`Success`, `Error`, `Stopped`).
    pub fn name(self) -> &'static str {
        match self {
            ScanStatus::Success => "Success",
            ScanStatus::Error => "Error",
            ScanStatus::Stopped => "Stopped",
        }
    }

    /// The event kind of a scan that ended so.
    pub fn kind(self) -> EventKind {
        match self {
            ScanStatus::Success => EventKind::ScanningCompleted,
            ScanStatus::Error => EventKind::ScanningFailed,
            ScanStatus::Stopped => EventKind::ScanningStopped,
        }
    }
}

/// What was scanned for (Harbor's `event_data.scan.scan_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanType {
    /// Vulnerabilities (`scan_overview` in the payload).
    #[default]
    Vulnerability,
    /// A software bill of materials (`sbom_overview` in the payload).
    Sbom,
}

impl ScanType {
    pub fn name(self) -> &'static str {
        match self {
            ScanType::Vulnerability => "vulnerability",
            ScanType::Sbom => "sbom",
        }
    }
}

/// Scan facts of SCANNING_COMPLETED / SCANNING_FAILED / SCANNING_STOPPED.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanInfo {
    /// How the scan ended.
    pub status: ScanStatus,
    /// What was scanned for (older event logs have none: a vulnerability scan).
    #[serde(default)]
    pub scan_type: ScanType,
    /// Highest severity found (`None` when nothing was found; not rated for an sbom scan).
    pub severity: Severity,
    pub counts: SeverityCounts,
    /// When the scan completed.
    pub completed_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<Scanner>,
    /// The vulnerabilities, at most `side.max_vulnerabilities` of them (counts are complete).
    #[serde(default)]
    pub vulnerabilities: Vec<Vulnerability>,
    /// True when `vulnerabilities` was cut to the configured limit.
    #[serde(default)]
    pub vulnerabilities_truncated: bool,
    /// The error of a failed scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Id of the report (stable for one report).
    pub report_id: String,
    /// Digest of the SBOM (an sbom scan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_digest: Option<String>,
}

/// Quota facts of QUOTA_EXCEED / QUOTA_WARNING.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaInfo {
    /// Harbor-style sentence: how much would be added to what usage against which limit.
    pub details: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adding: Option<u64>,
}

/// One event. Serialized as is into the event log; payload formats are derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable id (UUIDv7): the `webhook-id` of every delivery attempt.
    pub id: Uuid,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When it happened (the response time).
    pub occurred_at: DateTime<Utc>,
    /// Who did it: Basic user, the JWT `sub` of a Bearer token, or `anonymous`.
    pub operator: String,
    /// Project (repository namespace): the first segment of the repository name.
    pub project: String,
    /// Full repository name, e.g. `prj/team/app` (for classic charts: `<project>/<chart>`).
    pub repository: String,
    /// Whether the project is public (`projects.<name>.public`).
    pub public: bool,
    /// When wharf first knew the repository (unix seconds): Harbor's
    /// `repository.date_created`, on artifact and chart events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_created: Option<i64>,
    /// Tags that point (or pointed) at the artifact; for pulls, the tag the client asked for.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Manifest digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Manifest media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact size in bytes (config + layers; an index: the sum over its known children).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `<external host>/<repository>:<tag>` or `…@<digest>`; chart archives: their chartrepo URL.
    pub resource_url: String,
    /// Platforms of a multi-platform image (`linux/amd64`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// The request that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Chart facts (chart events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartInfo>,
    /// Scan facts (scan events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanInfo>,
    /// Quota facts (quota events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaInfo>,
    /// A test notification (`…/webhook/policies/test`), not something that happened.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

/// The current time to the millisecond, as events keep it: the event log's row holds an
/// event's time in milliseconds, and no payload shows less than a second, so a finer part would
/// only be stored again in every body.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

impl Event {
    /// A new event of `kind` about `repository`, happening [`now`], with a fresh id.
    pub fn new(kind: EventKind, repository: &crate::route::Repository, operator: &str) -> Event {
        Event {
            id: Uuid::now_v7(),
            kind,
            occurred_at: now(),
            operator: operator.to_string(),
            project: repository.project().to_string(),
            repository: repository.as_str().to_string(),
            public: false,
            repository_created: None,
            tags: Vec::new(),
            digest: None,
            media_type: None,
            size: None,
            resource_url: String::new(),
            platforms: Vec::new(),
            request_id: None,
            client_addr: None,
            user_agent: None,
            chart: None,
            scan: None,
            quota: None,
            test: false,
        }
    }

    /// The repository without its project (`prj/team/app` → `team/app`).
    pub fn short_name(&self) -> &str {
        self.repository
            .split_once('/')
            .map(|(_, r)| r)
            .unwrap_or(&self.repository)
    }

    /// The first tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tags.first().map(String::as_str)
    }

    /// Image name as people write it: `prj/repo:tag`, else `prj/repo@digest`, else `prj/repo`.
    pub fn image_name(&self) -> String {
        match (self.tag(), &self.digest) {
            (Some(t), _) => format!("{}:{t}", self.repository),
            (None, Some(d)) => format!("{}@{d}", self.repository),
            (None, None) => self.repository.clone(),
        }
    }

    /// Resource URL for an OCI reference: `<host>/<repo>:<tag>` or `<host>/<repo>@<digest>`.
    pub fn oci_resource_url(
        host: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> String {
        match (tag, digest) {
            (Some(t), _) => format!("{host}/{repository}:{t}"),
            (None, Some(d)) => format!("{host}/{repository}@{d}"),
            (None, None) => format!("{host}/{repository}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event times are kept to the millisecond (what the event log's row holds).
    #[test]
    fn events_happen_to_the_millisecond() {
        let repo = crate::route::Repository::parse("prj/app").unwrap();
        for _ in 0..100 {
            let e = Event::new(EventKind::PullArtifact, &repo, "alice");
            assert_eq!(e.occurred_at.timestamp_subsec_nanos() % 1_000_000, 0);
        }
    }
}
