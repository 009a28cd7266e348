//! Harbor's `event_data` and the Default payload as views of an [`Event`] that serialize
//! straight to JSON: the payload of every delivery is written without building a
//! `serde_json::Value` tree first (its maps, their hashing and the tree's drop were a sixth of
//! a delivered pull's instructions). Key order and presence are Harbor's (the golden payloads
//! pin them); [`super::event_data`] is the same view as a `Value`, for the formats that edit it.

use serde::Serialize;
use serde_json::{Value, json};

use super::super::{Event, ScanType};
use super::{SCAN_REPORT_MIME, repo_type, sbom_overview, scan_overview};

/// The Default payload.
#[derive(Serialize)]
pub(crate) struct DefaultPayload<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    occur_at: i64,
    operator: &'a str,
    event_data: EventData<'a>,
}

impl<'a> DefaultPayload<'a> {
    pub(crate) fn of(e: &'a Event) -> DefaultPayload<'a> {
        DefaultPayload {
            kind: e.kind.harbor_type(),
            occur_at: e.occurred_at.timestamp(),
            operator: &e.operator,
            event_data: EventData::of(e),
        }
    }
}

/// Harbor's `event_data`.
#[derive(Serialize)]
pub(crate) struct EventData<'a> {
    resources: [Resource<'a>; 1],
    repository: RepositoryView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scan: Option<ScanKind>,
    custom_attributes: Custom<'a>,
}

#[derive(Serialize)]
struct ScanKind {
    scan_type: &'static str,
}

/// One resource per event, as Harbor (a delete with several tags names the first; the other
/// tags are in `tags`).
#[derive(Serialize)]
#[serde(untagged)]
enum Resource<'a> {
    Image(ImageResource<'a>),
    Chart(ChartResource<'a>),
}

#[derive(Serialize)]
struct ImageResource<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    tag: &'a str,
    resource_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scan_overview: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sbom_overview: Option<Value>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    image_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    platforms: &'a [String],
}

#[derive(Serialize)]
struct ChartResource<'a> {
    tag: &'a str,
    resource_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    chart_name: &'a str,
    chart_version: &'a str,
    chart_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a str>,
}

#[derive(Serialize)]
struct RepositoryView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    date_created: Option<i64>,
    name: &'a str,
    namespace: &'a str,
    repo_full_name: &'a str,
    repo_type: &'static str,
}

#[derive(Serialize)]
struct Custom<'a> {
    event_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    test: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_addr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    #[serde(rename = "Details", skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    adding: Option<String>,
}

impl<'a> EventData<'a> {
    pub(crate) fn of(e: &'a Event) -> EventData<'a> {
        let resource = if e.kind.is_chart() {
            let chart = e.chart.as_ref();
            let version = chart.map_or("", |c| c.version.as_str());
            Resource::Chart(ChartResource {
                tag: version,
                resource_url: &e.resource_url,
                digest: e.digest.as_deref(),
                chart_name: chart.map_or("", |c| c.name.as_str()),
                chart_version: version,
                chart_type: chart.map_or("", |c| c.chart_type.as_str()),
                app_version: chart.and_then(|c| c.app_version.as_deref()),
                size: chart.and_then(|c| c.size).or(e.size),
                media_type: e.media_type.as_deref(),
            })
        } else {
            let tag = e.tag();
            let host = e.resource_url.split('/').next().unwrap_or_default();
            let scan = |t: ScanType| e.scan.as_ref().filter(|s| s.scan_type == t);
            Resource::Image(ImageResource {
                digest: e.digest.as_deref(),
                tag: tag.or(e.digest.as_deref()).unwrap_or_default(),
                resource_url: Event::oci_resource_url(
                    host,
                    &e.repository,
                    tag,
                    e.digest.as_deref(),
                ),
                scan_overview: scan(ScanType::Vulnerability)
                    .map(|s| json!({ SCAN_REPORT_MIME: scan_overview(s) })),
                sbom_overview: scan(ScanType::Sbom).map(sbom_overview),
                tags: &e.tags,
                image_name: e.image_name(),
                media_type: e.media_type.as_deref(),
                size: e.size,
                platforms: &e.platforms,
            })
        };
        let name = match &e.chart {
            Some(c) if e.kind.is_chart() && !c.name.is_empty() => c.name.as_str(),
            _ => e.short_name(),
        };
        let quota = e.quota.as_ref();
        EventData {
            resources: [resource],
            repository: RepositoryView {
                date_created: e.repository_created.filter(|_| e.kind.is_artifact()),
                name,
                namespace: &e.project,
                repo_full_name: &e.repository,
                repo_type: repo_type(e),
            },
            scan: e.scan.as_ref().map(|s| ScanKind {
                scan_type: s.scan_type.name(),
            }),
            custom_attributes: Custom {
                event_id: e.id.to_string(),
                test: e.test.then_some("true"),
                request_id: e.request_id.as_deref(),
                client_addr: e.client_addr.as_deref(),
                user_agent: e.user_agent.as_deref(),
                details: quota.map(|q| q.details.as_str()),
                limit: quota.and_then(|q| q.limit).map(|v| v.to_string()),
                usage: quota.and_then(|q| q.usage).map(|v| v.to_string()),
                adding: quota.and_then(|q| q.adding).map(|v| v.to_string()),
            },
        }
    }
}
