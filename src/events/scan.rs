//! Scan reports: a Trivy JSON report or a Harbor pluggable-scanner adapter report
//! (`application/vnd.security.vulnerability.report; version=1.1`), detected by shape, reduced
//! to [`ScanInfo`].
//!
//! Severities map onto Harbor's five: Trivy's UPPERCASE names directly; the adapter's
//! `Negligible` counts as Low. The seed's "critical / major / minor" are Critical, High, and
//! Medium + Low. A vulnerability is fixable when it names a fixed version. Counts are always
//! complete; the list keeps the `max` most severe (then by id).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{ScanInfo, Scanner, Severity, SeverityCounts, Vulnerability};

/// Why a report was not understood.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "report: neither a Trivy JSON report (Results) nor a scanner-adapter report (vulnerabilities)"
    )]
    Shape,
    /// A Trivy report (by its shape) with a field that does not fit.
    #[error("{field}: {source} (read as a Trivy JSON report)")]
    Trivy {
        field: String,
        #[source]
        source: serde_json::Error,
    },
    /// A scanner-adapter report (by its shape) with a field that does not fit.
    #[error("{field}: {source} (read as a scanner-adapter report)")]
    Adapter {
        field: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Deserialize `report`, naming the field that does not fit (`report.Results[0]...`).
fn read_as<T: for<'de> Deserialize<'de>>(
    report: &serde_json::Value,
) -> Result<T, (String, serde_json::Error)> {
    serde_path_to_error::deserialize(report).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "report".to_string()
        } else {
            format!("report.{path}")
        };
        (field, e.into_inner())
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrivyReport {
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    results: Option<Vec<TrivyResult>>,
    #[serde(default)]
    trivy: Option<TrivyMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrivyMeta {
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrivyResult {
    #[serde(default)]
    vulnerabilities: Option<Vec<TrivyVuln>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrivyVuln {
    #[serde(rename = "VulnerabilityID")]
    vulnerability_id: String,
    #[serde(default)]
    pkg_name: Option<String>,
    #[serde(default)]
    installed_version: Option<String>,
    #[serde(default)]
    fixed_version: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(rename = "PrimaryURL", default)]
    primary_url: Option<String>,
    #[serde(default)]
    references: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct AdapterReport {
    #[serde(default)]
    generated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    scanner: Option<Scanner>,
    vulnerabilities: Vec<AdapterVuln>,
}

#[derive(Deserialize)]
struct AdapterVuln {
    id: String,
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    fix_version: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    links: Option<Vec<String>>,
}

/// A reference that looks like where the fix is (an advisory, a release, a commit).
fn fix_link(refs: &[String], primary: Option<&str>) -> Option<String> {
    const HINTS: [&str; 6] = ["secadv", "advisor", "release", "commit", "fix", "security"];
    refs.iter()
        .filter(|r| Some(r.as_str()) != primary)
        .find(|r| {
            let l = r.to_ascii_lowercase();
            HINTS.iter().any(|h| l.contains(h))
        })
        .cloned()
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

/// Reduce a parsed report to scan facts (status Success).
pub fn summarize(report: &serde_json::Value, max: usize) -> Result<ScanInfo, ReportError> {
    let (vulns, scanner, at) =
        if report.get("Results").is_some() || report.get("SchemaVersion").is_some() {
            let t: TrivyReport =
                read_as(report).map_err(|(field, source)| ReportError::Trivy { field, source })?;
            let scanner = Scanner {
                name: "Trivy".into(),
                vendor: "Aqua Security".into(),
                version: t.trivy.and_then(|m| m.version).unwrap_or_default(),
            };
            let vulns: Vec<Vulnerability> = t
                .results
                .unwrap_or_default()
                .into_iter()
                .flat_map(|r| r.vulnerabilities.unwrap_or_default())
                .map(|v| {
                    let refs = v.references.unwrap_or_default();
                    let link = non_empty(v.primary_url).or_else(|| refs.first().cloned());
                    Vulnerability {
                        fix_link: fix_link(&refs, link.as_deref()),
                        link,
                        id: v.vulnerability_id,
                        package: non_empty(v.pkg_name),
                        version: non_empty(v.installed_version),
                        fix_version: non_empty(v.fixed_version),
                        severity: Severity::from_report(v.severity.as_deref().unwrap_or("")),
                        description: non_empty(v.description).or(non_empty(v.title)),
                    }
                })
                .collect();
            (vulns, Some(scanner), t.created_at)
        } else if report.get("vulnerabilities").is_some() {
            let a: AdapterReport = read_as(report)
                .map_err(|(field, source)| ReportError::Adapter { field, source })?;
            let vulns = a
                .vulnerabilities
                .into_iter()
                .map(|v| {
                    let links = v.links.unwrap_or_default();
                    let link = links.first().cloned();
                    Vulnerability {
                        fix_link: fix_link(&links, link.as_deref()),
                        link,
                        id: v.id,
                        package: non_empty(v.package),
                        version: non_empty(v.version),
                        fix_version: non_empty(v.fix_version),
                        severity: Severity::from_report(v.severity.as_deref().unwrap_or("")),
                        description: non_empty(v.description),
                    }
                })
                .collect();
            (vulns, a.scanner, a.generated_at)
        } else {
            return Err(ReportError::Shape);
        };
    let mut counts = SeverityCounts::default();
    for v in &vulns {
        counts.add(v.severity, v.fix_version.is_some());
    }
    let severity = vulns
        .iter()
        .map(|v| v.severity)
        .max()
        .unwrap_or(Severity::None);
    let mut sorted = vulns;
    sorted.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
    let truncated = sorted.len() > max;
    sorted.truncate(max);
    Ok(ScanInfo {
        status: super::ScanStatus::Success,
        scan_type: super::ScanType::Vulnerability,
        severity,
        counts,
        completed_at: at.unwrap_or_else(Utc::now),
        started_at: None,
        scanner,
        vulnerabilities: sorted,
        vulnerabilities_truncated: truncated,
        error: None,
        report_id: uuid::Uuid::now_v7().to_string(),
        sbom_digest: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/scan")
            .join(name);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn trivy_report_counts_every_severity_and_fix() {
        let s = summarize(&fixture("trivy-alpine.json"), 100).unwrap();
        assert_eq!(
            s.counts,
            SeverityCounts {
                critical: 1,
                high: 2,
                medium: 2,
                low: 1,
                unknown: 1,
                total: 7,
                fixable: 5
            }
        );
        assert_eq!(s.severity, Severity::Critical);
        assert_eq!(s.vulnerabilities[0].id, "CVE-2023-5363");
        assert_eq!(
            s.completed_at.to_rfc3339(),
            "2026-11-20T10:15:42.123456789+00:00"
        );
        let v = s
            .vulnerabilities
            .iter()
            .find(|v| v.id == "CVE-2023-0286")
            .unwrap();
        assert_eq!(
            v.link.as_deref(),
            Some("https://avd.aquasec.com/nvd/cve-2023-0286")
        );
        assert_eq!(
            v.fix_link.as_deref(),
            Some("https://access.redhat.com/security/cve/CVE-2023-0286")
        );
        assert_eq!(v.fix_version.as_deref(), Some("3.0.8-r0"));
        assert_eq!(s.scanner.as_ref().unwrap().name, "Trivy");
    }

    #[test]
    fn adapter_report_maps_negligible_to_low() {
        let s = summarize(&fixture("adapter-report.json"), 100).unwrap();
        assert_eq!(
            s.counts,
            SeverityCounts {
                critical: 1,
                high: 1,
                medium: 1,
                low: 2,
                unknown: 1,
                total: 6,
                fixable: 3
            }
        );
        assert_eq!(s.scanner.unwrap().version, "v0.50.1");
        let crit = &s.vulnerabilities[0];
        assert_eq!(
            crit.fix_link.as_deref(),
            Some("https://www.openssl.org/news/secadv/20231024.txt")
        );
    }

    #[test]
    fn clean_report_and_truncation() {
        let s = summarize(&fixture("trivy-clean.json"), 100).unwrap();
        assert_eq!(s.counts.total, 0);
        assert_eq!(s.severity, Severity::None);
        let s = summarize(&fixture("trivy-alpine.json"), 2).unwrap();
        assert_eq!(s.vulnerabilities.len(), 2);
        assert!(s.vulnerabilities_truncated);
        assert_eq!(s.counts.total, 7, "counts stay complete");
    }

    #[test]
    fn unknown_shapes_are_errors() {
        let err = |v: serde_json::Value| summarize(&v, 10).unwrap_err().to_string();
        assert!(err(serde_json::json!({"foo": 1})).starts_with("report: neither"));
        assert!(err(serde_json::json!([1])).starts_with("report: neither"));
        let e = err(serde_json::json!({"Results": "nope"}));
        assert!(
            e.starts_with("report.Results: invalid type") && e.contains("Trivy"),
            "{e}"
        );
        let e = err(
            serde_json::json!({"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{"Severity": "HIGH"}]}]}),
        );
        assert!(
            e.starts_with("report.Results[0].Vulnerabilities[0]: missing field `VulnerabilityID`"),
            "{e}"
        );
        let e = err(serde_json::json!({"vulnerabilities": [{"nope": 1}]}));
        assert!(
            e.starts_with("report.vulnerabilities[0]: missing field `id`") && e.contains("adapter"),
            "{e}"
        );
        // the field's error is kept as the cause
        for v in [
            serde_json::json!({"Results": "nope"}),
            serde_json::json!({"vulnerabilities": [{"nope": 1}]}),
        ] {
            let e = summarize(&v, 10).unwrap_err();
            assert!(std::error::Error::source(&e).is_some(), "{e:?}");
        }
    }

    #[test]
    fn severities_order_name_and_read_back_as_harbor_spells_them() {
        use crate::events::Severity as S;
        let ordered = [
            S::NotRated,
            S::None,
            S::Unknown,
            S::Low,
            S::Medium,
            S::High,
            S::Critical,
        ];
        assert!(ordered.windows(2).all(|w| w[0] < w[1]));
        for s in ordered {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
            assert_eq!(serde_json::from_str::<S>(&json).unwrap(), s, "{json}");
        }
        assert_eq!(S::NotRated.name(), "");
        // a scanner's spelling, and names wharf does not know
        assert_eq!(S::from_report("CRITICAL"), S::Critical);
        assert_eq!(S::from_report("negligible"), S::Low);
        assert_eq!(S::from_report(""), S::Unknown);
        assert_eq!(serde_json::from_str::<S>("\"Severe\"").unwrap(), S::Unknown);
        let mut counts = SeverityCounts::default();
        for (s, fixable) in [(S::Critical, true), (S::Low, false), (S::None, false)] {
            counts.add(s, fixable);
        }
        let by = S::RATED.map(|s| counts.of(s));
        assert_eq!(by, [1, 0, 0, 1, 1]);
        assert_eq!((counts.total, counts.fixable), (3, 1));
    }
}
