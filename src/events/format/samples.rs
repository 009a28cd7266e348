//! The sample events of the golden payloads (and of template checks and previews).

use crate::events::Event;

/// The digest of the sample artifacts.
const DIGEST: &str = "sha256:9e2c9d5f44efbb6ee83aecd17a120c513047d289d142ec5738c9f02f9b24ad07";
/// The host of the samples' resource URLs.
const HOST: &str = "registry.example.com";

/// Sample events with fixed id and time, named: the inputs of the golden payloads. One per
/// kind, plus a multi-platform push and a pull by digest.
pub fn samples() -> Vec<(&'static str, Event)> {
    use crate::events::*;
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
            severity: if ok {
                Severity::Critical
            } else {
                Severity::None
            },
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
                    severity: Severity::Critical,
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

/// The sample events of `kind` (REPLICATION and TAG_RETENTION, which wharf never produces, get
/// the image push sample under their kind).
pub fn samples_of(kind: crate::events::EventKind) -> Vec<Event> {
    let all = samples();
    let of: Vec<Event> = all
        .iter()
        .filter(|(_, e)| e.kind == kind)
        .map(|(_, e)| e.clone())
        .collect();
    if !of.is_empty() {
        return of;
    }
    all.into_iter()
        .take(1)
        .map(|(_, mut e)| {
            e.kind = kind;
            e
        })
        .collect()
}

/// The first sample event of `kind`.
pub fn sample(kind: crate::events::EventKind) -> Event {
    samples_of(kind)
        .into_iter()
        .next()
        .unwrap_or_else(|| unreachable!("samples_of never answers an empty list"))
}

/// The first sample event of `kind`, in `project`, its resource URL on `host`.
pub fn sample_in(kind: crate::events::EventKind, project: &str, host: &str) -> Event {
    let mut e = sample(kind);
    let short = e.short_name().to_string();
    let old = format!("{HOST}/{}/", e.project);
    e.resource_url = e
        .resource_url
        .replacen(&old, &format!("{host}/{project}/"), 1);
    e.project = project.to_string();
    e.repository = format!("{project}/{short}");
    e
}
