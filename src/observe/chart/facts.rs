//! A chart's facts for download and delete events: what wharf remembers of its upload, else
//! ChartMuseum's API and the archive itself.

use http::{Method, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::forward::Upstream;
use crate::observe::Who;
use crate::store::Store;
use crate::store::charts::{self, ChartFacts};

pub(super) fn unknown(project: &str, name: &str, version: &str) -> ChartFacts {
    ChartFacts {
        project: project.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        ..ChartFacts::default()
    }
}

/// What wharf remembers of the chart's upload.
pub(super) async fn remembered(
    store: &Store,
    project: &str,
    name: &str,
    version: &str,
) -> Option<ChartFacts> {
    let (p, n, v) = (project.to_string(), name.to_string(), version.to_string());
    match store
        .within(store.read(move |c| charts::get(c, &p, &n, &v)))
        .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "reading chart facts failed");
            None
        }
    }
}

/// Characters escaped in a path segment of wharf's own requests to ChartMuseum.
pub(super) const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

pub(super) fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Type and appVersion from ChartMuseum's `GET /api/<p>/charts/<name>/<version>` (with the
/// client's credentials); `None` when ChartMuseum did not describe the version.
pub(super) async fn from_chartmuseum(
    up: &Upstream,
    who: &Who,
    project: &str,
    name: &str,
    version: &str,
) -> Option<ChartFacts> {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(default, rename = "type")]
        chart_type: Option<String>,
        #[serde(default, rename = "appVersion")]
        app_version: Option<serde_json::Value>,
    }
    let mut facts = unknown(project, name, version);
    let path = format!(
        "/api/{}/charts/{}/{}",
        seg(project),
        seg(name),
        seg(version)
    );
    match up
        .fetch(Method::GET, &path, who.headers("application/json"), 1 << 20)
        .await
    {
        Ok((parts, body)) if parts.status == StatusCode::OK => {
            match serde_json::from_slice::<Version>(&body) {
                Ok(v) => {
                    facts.chart_type = v
                        .chart_type
                        .filter(|t| !t.is_empty())
                        .unwrap_or_else(|| "application".into());
                    facts.app_version = match v.app_version {
                        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
                        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                        _ => None,
                    };
                    return Some(facts);
                }
                Err(e) => tracing::debug!(error = %e, %path, "chart version not readable"),
            }
        }
        Ok((parts, _)) => {
            tracing::debug!(status = parts.status.as_u16(), %path, "chart version not readable")
        }
        Err(e) => {
            tracing::debug!(error = %crate::error_chain(&e), %path, "chart version not readable")
        }
    }
    None
}

/// Size of the chart archive, read from ChartMuseum (which answers no HEAD for archives): the
/// archive is fetched, up to `max_upload_size` (`chartrepo.max_upload_size`).
pub(super) async fn archive_size(
    max_upload_size: u64,
    up: &Upstream,
    who: &Who,
    project: &str,
    name: &str,
    version: &str,
) -> Option<u64> {
    let path = format!(
        "/{}/charts/{}",
        seg(project),
        seg(&format!("{name}-{version}.tgz"))
    );
    let limit = usize::try_from(max_upload_size).unwrap_or(usize::MAX);
    match up
        .fetch(Method::GET, &path, who.headers("*/*"), limit)
        .await
    {
        Ok((parts, body)) if parts.status == StatusCode::OK => Some(body.len() as u64),
        _ => None,
    }
}
