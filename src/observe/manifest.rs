//! Manifest facts: what kind of artifact a manifest describes, its size, platforms and blobs.
//! Parsed with oci-spec (OCI and Docker schema 2 manifests and indexes / manifest lists).

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

/// Helm chart config media type.
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
/// Helm chart content layer media type.
pub const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The largest manifest wharf reads (distribution's limit too).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Every manifest media type, for `Accept` on wharf's own manifest reads.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// What a manifest describes (kept with what wharf learns of it:
/// [`ArtifactKind`](crate::store::knowledge::ArtifactKind)).
pub use crate::store::knowledge::ArtifactKind as Kind;

/// A child of an index.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub digest: String,
    pub size: u64,
    /// `os/arch[/variant]`, when the index says.
    pub platform: Option<String>,
}

/// The facts wharf takes from one manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub kind: Kind,
    /// `mediaType` of the document (or the request's Content-Type).
    pub media_type: Option<String>,
    pub config_digest: Option<String>,
    /// Config and layer blobs with their sizes.
    pub blobs: Vec<(String, u64)>,
    /// Size of config + layers (0 for an index: see `children`).
    pub size: u64,
    pub children: Vec<Child>,
    /// In key order, so that the facts of one manifest are the same value every time.
    pub annotations: BTreeMap<String, String>,
    /// Size of the chart archive layer (charts).
    pub chart_layer_size: Option<u64>,
}

impl Facts {
    /// Platforms of an index's children, in order, without duplicates.
    pub fn platforms(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.children {
            if let Some(p) = &c.platform
                && !p.starts_with("unknown/")
                && !out.contains(p)
            {
                out.push(p.clone());
            }
        }
        out
    }

    /// Child digests (an index).
    pub fn child_digests(&self) -> Vec<String> {
        self.children.iter().map(|c| c.digest.clone()).collect()
    }

    /// What wharf remembers of this manifest (an index's size is left to its children).
    pub fn artifact(
        &self,
        repository: &str,
        digest: &str,
        chart: Option<&crate::events::ChartInfo>,
    ) -> crate::store::knowledge::Artifact {
        crate::store::knowledge::Artifact {
            repository: repository.to_string(),
            digest: digest.to_string(),
            kind: self.kind,
            media_type: self.media_type.clone(),
            size: (self.kind != Kind::Index).then_some(self.size),
            config_digest: self.config_digest.clone(),
            chart: chart.cloned(),
            platforms: self.platforms(),
            children: self.child_digests(),
            blobs: self.blobs.clone(),
        }
    }
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a JSON manifest: {0}")]
    Json(#[source] serde_json::Error),
    #[error("not an image manifest or index: {0}")]
    Shape(#[source] serde_json::Error),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

fn is_index_type(t: &str) -> bool {
    t == "application/vnd.oci.image.index.v1+json"
        || t == "application/vnd.docker.distribution.manifest.list.v2+json"
}

fn platform_of(d: &Descriptor) -> Option<String> {
    d.platform().as_ref().map(|p| {
        let mut s = format!("{}/{}", p.os(), p.architecture());
        if let Some(v) = p.variant() {
            s.push('/');
            s.push_str(v);
        }
        s
    })
}

/// Parse a manifest body; `content_type` is the request's or response's Content-Type.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Facts, ManifestError> {
    let probe: Probe = serde_json::from_slice(body).map_err(ManifestError::Json)?;
    let media_type = probe
        .media_type
        .clone()
        .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string()));
    let is_index = media_type.as_deref().is_some_and(is_index_type)
        || (media_type.is_none() && probe.manifests.is_some());
    if is_index {
        let index = serde_json::from_slice::<ImageIndex>(body).map_err(ManifestError::Shape)?;
        let children = index
            .manifests()
            .iter()
            .map(|d| Child {
                digest: d.digest().to_string(),
                size: d.size(),
                platform: platform_of(d),
            })
            .collect();
        return Ok(Facts {
            kind: Kind::Index,
            media_type,
            config_digest: None,
            blobs: Vec::new(),
            size: 0,
            children,
            annotations: index
                .annotations()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            chart_layer_size: None,
        });
    }
    let m = serde_json::from_slice::<ImageManifest>(body).map_err(ManifestError::Shape)?;
    let config = m.config();
    let mut blobs = vec![(config.digest().to_string(), config.size())];
    blobs.extend(
        m.layers()
            .iter()
            .map(|l| (l.digest().to_string(), l.size())),
    );
    // declared sizes are untrusted: added with saturation, never wrapping
    let size = blobs
        .iter()
        .fold(0u64, |acc, (_, s)| acc.saturating_add(*s));
    let is_chart = config.media_type().to_string() == HELM_CONFIG;
    let chart_layer_size = m
        .layers()
        .iter()
        .find(|l| l.media_type().to_string() == HELM_CHART_LAYER)
        .map(|l| l.size());
    Ok(Facts {
        kind: if is_chart { Kind::Chart } else { Kind::Image },
        media_type,
        config_digest: Some(config.digest().to_string()),
        blobs,
        size,
        children: Vec::new(),
        annotations: m
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        chart_layer_size,
    })
}

/// Chart facts from a Helm config blob (`Chart.yaml` as JSON) and the manifest annotations.
pub fn chart_info(
    config_json: Option<&[u8]>,
    facts: &Facts,
    tag: Option<&str>,
) -> crate::events::ChartInfo {
    #[derive(Deserialize, Default)]
    struct HelmConfig {
        #[serde(default)]
        name: String,
        #[serde(default)]
        version: String,
        #[serde(default, rename = "type")]
        chart_type: String,
        #[serde(default, rename = "appVersion")]
        app_version: Option<String>,
    }
    let cfg: HelmConfig = config_json
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    let ann = |k: &str| facts.annotations.get(k).cloned().filter(|s| !s.is_empty());
    let name = Some(cfg.name)
        .filter(|s| !s.is_empty())
        .or_else(|| ann("org.opencontainers.image.title"))
        .unwrap_or_default();
    let version = Some(cfg.version)
        .filter(|s| !s.is_empty())
        .or_else(|| ann("org.opencontainers.image.version"))
        .or_else(|| tag.map(str::to_string))
        .unwrap_or_default();
    crate::events::ChartInfo {
        name,
        version,
        // Helm: an empty type means an application chart
        chart_type: if cfg.chart_type.is_empty() {
            "application".into()
        } else {
            cfg.chart_type
        },
        app_version: cfg.app_version.filter(|s| !s.is_empty()),
        size: facts.chart_layer_size,
    }
}

/// Parsed manifests by digest. Content-addressed, so an entry never goes stale; bounded (all
/// entries are dropped when it is full). Saves re-parsing the manifests pulled again and again.
pub struct FactsCache {
    map: std::sync::Mutex<HashMap<String, std::sync::Arc<Facts>>>,
    max: usize,
}

impl FactsCache {
    pub fn new(max: usize) -> Self {
        Self {
            map: std::sync::Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// The facts of the manifest `body` whose digest is `digest` (the registry's
    /// `Docker-Content-Digest` for exactly this body).
    pub fn get_or_parse(
        &self,
        digest: &str,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Option<std::sync::Arc<Facts>> {
        if let Some(f) = self.map.lock().ok().and_then(|m| m.get(digest).cloned()) {
            return Some(f);
        }
        let facts = std::sync::Arc::new(parse(body, content_type).ok()?);
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= self.max {
                m.clear();
            }
            m.insert(digest.to_string(), facts.clone());
        }
        Some(facts)
    }
}

#[cfg(test)]
mod tests {

    /// Parsing one manifest twice gives equal facts, down to their order: annotations were a
    /// `HashMap` (each instance iterates in its own random order), which the fuzz target's
    /// determinism oracle caught (seed `fuzz/seeds/manifest/annotations-order`).
    #[test]
    fn facts_of_one_manifest_are_the_same_every_time() {
        let annotations: Vec<String> = (0..8).map(|i| format!("\"k{i}\": \"v{i}\"")).collect();
        let body = format!(
            r#"{{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {{"mediaType": "application/vnd.oci.image.config.v1+json",
              "digest": "sha256:{a}", "size": 123}},
            "layers": [], "annotations": {{{}}}}}"#,
            annotations.join(", "),
            a = "a".repeat(64)
        );
        let first = format!("{:?}", parse(body.as_bytes(), None).unwrap());
        for _ in 0..4 {
            assert_eq!(
                first,
                format!("{:?}", parse(body.as_bytes(), None).unwrap())
            );
        }
    }

    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    #[test]
    fn oci_image_manifest() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":100}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":1000}},
                      {{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D3}","size":10}}]}}"#
        );
        let f = parse(body.as_bytes(), None).unwrap();
        assert_eq!(f.kind, Kind::Image);
        assert_eq!(f.size, 1110);
        assert_eq!(f.blobs.len(), 3);
        assert_eq!(f.config_digest.as_deref(), Some(D1));
    }

    /// Declared sizes are the client's word: four of 2^62 bytes saturate instead of wrapping to
    /// 0 (or panicking in a debug build).
    #[test]
    fn huge_declared_sizes_saturate() {
        let layer = |d: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":4611686018427387904}}"#
            )
        };
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":4611686018427387904}},
            "layers":[{},{},{}]}}"#,
            layer(D2),
            layer(D3),
            layer(D1)
        );
        let f = parse(body.as_bytes(), None).unwrap();
        assert_eq!(f.size, u64::MAX);
    }

    #[test]
    fn docker_manifest_list_with_platforms() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{D1}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}},
                         {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{D2}","size":5,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}},
                         {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D3}","size":5,"platform":{{"architecture":"unknown","os":"unknown"}}}}]}}"#
        );
        let f = parse(body.as_bytes(), None).unwrap();
        assert_eq!(f.kind, Kind::Index);
        assert_eq!(f.platforms(), vec!["linux/amd64", "linux/arm/v7"]);
        assert_eq!(f.child_digests().len(), 3);
    }

    #[test]
    fn helm_chart() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{HELM_CONFIG}","digest":"{D1}","size":141}},
            "layers":[{{"mediaType":"{HELM_CHART_LAYER}","digest":"{D2}","size":4167}}],
            "annotations":{{"org.opencontainers.image.title":"mychart","org.opencontainers.image.version":"0.1.0"}}}}"#
        );
        let f = parse(
            body.as_bytes(),
            Some("application/vnd.oci.image.manifest.v1+json"),
        )
        .unwrap();
        assert_eq!(f.kind, Kind::Chart);
        assert_eq!(
            f.media_type.as_deref(),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        let c = chart_info(
            Some(br#"{"name":"mychart","version":"0.1.0","type":"library","appVersion":"1.2"}"#),
            &f,
            None,
        );
        assert_eq!(
            (c.name.as_str(), c.version.as_str(), c.chart_type.as_str()),
            ("mychart", "0.1.0", "library")
        );
        assert_eq!(c.size, Some(4167));
        let c = chart_info(None, &f, Some("0.1.0"));
        assert_eq!(
            (c.name.as_str(), c.chart_type.as_str()),
            ("mychart", "application")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"schemaVersion\":2}",
            b"{\"manifests\":7}",
            &[0xff; 10],
        ] {
            assert!(parse(body, None).is_err());
        }
    }
}
