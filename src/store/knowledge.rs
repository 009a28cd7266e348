//! Knowledge: what wharf learned from traffic about artifacts (manifests) and tags, so events
//! can carry sizes, tags and chart facts that a single request does not show.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{StoreError, now_ms};
use crate::events::ChartInfo;

/// One manifest wharf has seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub repository: String,
    pub digest: String,
    /// `image`, `index` or `chart`.
    pub kind: String,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub config_digest: Option<String>,
    pub chart: Option<ChartInfo>,
    pub platforms: Vec<String>,
    /// Child manifest digests (an index).
    pub children: Vec<String>,
    /// Blobs referenced (config and layers) with their sizes.
    pub blobs: Vec<(String, u64)>,
}

fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Sql(e.to_string()))
}

fn parse<T: for<'de> Deserialize<'de> + Default>(s: Option<String>) -> T {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// Insert or replace an artifact.
pub fn upsert_artifact(conn: &Connection, a: &Artifact) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO artifacts (repository, digest, kind, media_type, size, config_digest, chart, platforms, children, blobs, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (repository, digest) DO UPDATE SET kind = excluded.kind, media_type = excluded.media_type,
           size = excluded.size, config_digest = excluded.config_digest, chart = excluded.chart,
           platforms = excluded.platforms, children = excluded.children, blobs = excluded.blobs")?.execute(
        params![
            a.repository,
            a.digest,
            a.kind,
            a.media_type,
            a.size.map(|s| s as i64),
            a.config_digest,
            a.chart.as_ref().map(json).transpose()?,
            json(&a.platforms)?,
            json(&a.children)?,
            json(&a.blobs)?,
            now_ms(),
        ],
    )?;
    Ok(())
}

/// The artifact `digest` of `repository`, if known.
pub fn artifact(
    conn: &Connection,
    repository: &str,
    digest: &str,
) -> Result<Option<Artifact>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT kind, media_type, size, config_digest, chart, platforms, children, blobs
             FROM artifacts WHERE repository = ?1 AND digest = ?2",
        )?
        .query_row(params![repository, digest], |r| {
            Ok(Artifact {
                repository: repository.to_string(),
                digest: digest.to_string(),
                kind: r.get(0)?,
                media_type: r.get(1)?,
                size: r.get::<_, Option<i64>>(2)?.map(|s| s.max(0) as u64),
                config_digest: r.get(3)?,
                chart: r
                    .get::<_, Option<String>>(4)?
                    .and_then(|s| serde_json::from_str(&s).ok()),
                platforms: parse(r.get(5)?),
                children: parse(r.get(6)?),
                blobs: parse(r.get(7)?),
            })
        })
        .optional()?)
}

/// Sum of the known sizes of `digests` in `repository`, and how many were known.
pub fn known_size(
    conn: &Connection,
    repository: &str,
    digests: &[String],
) -> Result<(u64, usize), StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT size FROM artifacts WHERE repository = ?1 AND digest = ?2")?;
    let (mut sum, mut known) = (0u64, 0usize);
    for d in digests {
        let size: Option<Option<i64>> = stmt
            .query_row(params![repository, d], |r| r.get(0))
            .optional()?;
        if let Some(Some(s)) = size {
            sum += s.max(0) as u64;
            known += 1;
        }
    }
    Ok((sum, known))
}

/// Point `tag` of `repository` at `digest`.
pub fn set_tag(
    conn: &Connection,
    repository: &str,
    tag: &str,
    digest: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO tags (repository, tag, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at")?.execute(
        params![repository, tag, digest, now_ms()],
    )?;
    Ok(())
}

/// Tags of `repository` known to point at `digest`, sorted.
pub fn tags_of(
    conn: &Connection,
    repository: &str,
    digest: &str,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT tag FROM tags WHERE repository = ?1 AND digest = ?2 ORDER BY tag",
    )?;
    let tags = stmt
        .query_map(params![repository, digest], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(tags)
}

/// Forget an artifact and the tags that pointed at it (it was deleted).
pub fn forget(conn: &Connection, repository: &str, digest: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM tags WHERE repository = ?1 AND digest = ?2")?
        .execute(params![repository, digest])?;
    conn.prepare_cached("DELETE FROM artifacts WHERE repository = ?1 AND digest = ?2")?
        .execute(params![repository, digest])?;
    Ok(())
}

/// The digest `tag` of `repository` points at, as far as wharf knows.
pub fn digest_of_tag(
    conn: &Connection,
    repository: &str,
    tag: &str,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT digest FROM tags WHERE repository = ?1 AND tag = ?2")?
        .query_row(params![repository, tag], |r| r.get(0))
        .optional()?)
}
