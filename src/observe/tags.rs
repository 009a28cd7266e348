//! Tags as the registry knows them: a repository's tag list, and which tags point at a digest
//! (for reports that come from the side endpoint, when wharf's own knowledge has none).

use futures_util::StreamExt;
use http::{Method, StatusCode};

use super::manifest;
use super::{DOCKER_CONTENT_DIGEST, Who, header_str};
use crate::forward::Upstream;
use crate::route::Repository;

/// Most tags checked one by one.
const MAX_TAGS_CHECKED: usize = 256;

/// The first page of `repo`'s tag list (`None` when it cannot be read).
pub(super) async fn list(registry: &Upstream, repo: &Repository, who: &Who) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct TagList {
        tags: Option<Vec<String>>,
    }
    let (parts, body) = registry
        .fetch(
            Method::GET,
            &format!("/v2/{repo}/tags/list"),
            who.headers("application/json"),
            4 << 20,
        )
        .await
        .ok()?;
    if parts.status != StatusCode::OK {
        return None;
    }
    serde_json::from_slice::<TagList>(&body).ok()?.tags
}

/// The tags the registry says point at `digest` (tag list, then a HEAD of each, bounded),
/// asked without credentials; sorted.
pub async fn registry_tags_pointing_at(
    registry: &Upstream,
    repo: &Repository,
    digest: &str,
) -> Vec<String> {
    let who = Who {
        operator: crate::events::operator::ANONYMOUS.into(),
        ip: std::net::IpAddr::from([127, 0, 0, 1]),
        ip_text: None,
        user_agent: None,
        authorization: None,
        request_id: String::new(),
        made_id: None,
    };
    let Some(tags) = list(registry, repo, &who).await else {
        return Vec::new();
    };
    let who = &who;
    let mut pointing: Vec<String> =
        futures_util::stream::iter(tags.into_iter().take(MAX_TAGS_CHECKED))
            .map(|tag| async move {
                let path = format!("/v2/{repo}/manifests/{tag}");
                let here = matches!(
                    registry
                        .fetch(Method::HEAD, &path, who.headers(manifest::ACCEPT_ALL), 0)
                        .await,
                    Ok((parts, _)) if parts.status == StatusCode::OK
                        && header_str(&parts.headers, &DOCKER_CONTENT_DIGEST) == Some(digest)
                );
                here.then_some(tag)
            })
            .buffer_unordered(8)
            .filter_map(|t| async move { t })
            .collect()
            .await;
    pointing.sort();
    pointing
}
