//! The chart archive: what an upload carries (a multipart form or a raw `.tgz`) and what its
//! `Chart.yaml` says, read within Helm's size limits; chart file names (`<name>-<version>.tgz`).

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;

use super::multipart::{CHART_FIELD, is_multipart, multipart_boundary, multipart_field};

/// The most bytes a chart archive may expand to while wharf looks for `Chart.yaml` (Helm's own
/// limit for a whole chart).
pub const MAX_EXPANDED_BYTES: u64 = 100 << 20;

/// The largest `Chart.yaml` wharf reads (Helm's limit for one file of a chart).
pub const MAX_CHART_YAML_BYTES: u64 = 5 << 20;

/// Why an upload did not yield the chart's facts (it then makes no event).
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("not a gzip-compressed tar archive: {0}")]
    Archive(#[source] std::io::Error),
    #[error("the archive expands to more than {0} bytes")]
    TooBig(u64),
    #[error("no Chart.yaml at the top of the chart directory")]
    NoChartYaml,
    #[error("Chart.yaml is larger than {0} bytes")]
    ChartYamlTooBig(u64),
    #[error("Chart.yaml is not valid YAML: {0}")]
    Yaml(#[source] serde_yaml_ng::Error),
    #[error("Chart.yaml has no {0}")]
    Missing(&'static str),
    #[error("multipart body: {0}")]
    Multipart(&'static str),
    #[error("the form has no `chart` field")]
    NoChartField,
}

/// What `Chart.yaml` says about a chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartMeta {
    pub name: String,
    pub version: String,
    /// `application` (also when `Chart.yaml` has no type) or `library`.
    pub chart_type: String,
    pub app_version: Option<String>,
}

/// An uploaded chart: its metadata and the size of its archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub meta: ChartMeta,
    pub size: u64,
}

/// The chart of an upload body: the multipart field `chart`, or the whole body.
pub fn read_upload(body: &[u8], content_type: Option<&str>) -> Result<Uploaded, ChartError> {
    let tgz = match content_type.and_then(multipart_boundary) {
        Some(boundary) => multipart_field(body, &boundary, CHART_FIELD)?,
        None if content_type.is_some_and(is_multipart) => {
            return Err(ChartError::Multipart("no boundary"));
        }
        None => body,
    };
    let meta = read_chart_yaml(tgz, MAX_EXPANDED_BYTES)?;
    Ok(Uploaded {
        meta,
        size: tgz.len() as u64,
    })
}

/// A reader that fails once more than `left` bytes were read (a decompression bomb guard), and
/// says so in `tripped`.
pub(super) struct Capped<R> {
    inner: R,
    left: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.tripped.set(true);
            return Err(std::io::Error::other("decompressed size limit reached"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Read `<dir>/Chart.yaml` (the first such entry) from a chart archive, reading at most
/// `max_expanded` bytes of the uncompressed tar stream.
pub fn read_chart_yaml(tgz: &[u8], max_expanded: u64) -> Result<ChartMeta, ChartError> {
    let tripped = Rc::new(Cell::new(false));
    let fail = |e: std::io::Error| {
        if tripped.get() {
            ChartError::TooBig(max_expanded)
        } else {
            ChartError::Archive(e)
        }
    };
    let mut ar = tar::Archive::new(Capped {
        inner: flate2::read::GzDecoder::new(tgz),
        left: max_expanded,
        tripped: tripped.clone(),
    });
    for entry in ar.entries().map_err(fail)? {
        let entry = entry.map_err(fail)?;
        if !entry.header().entry_type().is_file() || !is_top_chart_yaml(&entry.path_bytes()) {
            continue;
        }
        let mut buf = Vec::new();
        entry
            .take(MAX_CHART_YAML_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(fail)?;
        if buf.len() as u64 > MAX_CHART_YAML_BYTES {
            return Err(ChartError::ChartYamlTooBig(MAX_CHART_YAML_BYTES));
        }
        return parse_chart_yaml(&buf);
    }
    Err(ChartError::NoChartYaml)
}

/// `<dir>/Chart.yaml`, exactly one directory deep (`./` components ignored).
pub(super) fn is_top_chart_yaml(path: &[u8]) -> bool {
    let parts: Vec<&[u8]> = path
        .split(|&c| c == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    matches!(parts.as_slice(), [_, b"Chart.yaml"])
}

/// Name, version, type and appVersion of a `Chart.yaml`.
pub fn parse_chart_yaml(text: &[u8]) -> Result<ChartMeta, ChartError> {
    use serde_yaml_ng::Value;
    let doc: Value = serde_yaml_ng::from_slice(text).map_err(ChartError::Yaml)?;
    let text_of = |key: &str| match doc.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    };
    let name = text_of("name").ok_or(ChartError::Missing("name"))?;
    let version = text_of("version").ok_or(ChartError::Missing("version"))?;
    let chart_type = text_of("type").unwrap_or_else(|| "application".into());
    let app_version = match doc.get("appVersion") {
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => text_of("appVersion"),
    };
    Ok(ChartMeta {
        name,
        version,
        chart_type,
        app_version,
    })
}

/// `<name>-<version>.tgz` → `(name, version)`. Chart names may contain `-`, versions too
/// (`1.0.0-rc.1`): the version is the leftmost suffix after a `-` that is a whole SemVer
/// version (`1.2.3`, with pre-release and build parts); failing that, the suffix after the last
/// `-` that begins like a version (digits and a dot, optionally after a `v`).
pub fn split_chart_file(file: &str) -> Option<(&str, &str)> {
    let stem = file.strip_suffix(".tgz")?;
    let candidates: Vec<usize> = stem
        .match_indices('-')
        .map(|(i, _)| i)
        .filter(|&i| i > 0 && begins_like_version(&stem[i + 1..]))
        .collect();
    let i = candidates
        .iter()
        .copied()
        .find(|&i| is_semver(&stem[i + 1..]))
        .or_else(|| candidates.last().copied())?;
    Some((&stem[..i], &stem[i + 1..]))
}

pub(super) fn begins_like_version(s: &str) -> bool {
    let s = s.strip_prefix('v').unwrap_or(s);
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && s.as_bytes().get(digits) == Some(&b'.')
}

/// SemVer 2: `MAJOR.MINOR.PATCH[-pre.release][+build]` (a leading `v` allowed, as Helm does).
pub fn is_semver(s: &str) -> bool {
    let s = s.strip_prefix('v').unwrap_or(s);
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let idents = |t: &str| {
        t.split('.')
            .all(|id| !id.is_empty() && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
    };
    let nums: Vec<&str> = core.split('.').collect();
    nums.len() == 3
        && nums
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
        && pre.is_none_or(idents)
        && build.is_none_or(idents)
}

// ---------------------------------------------------------------------------------------------
// delete
