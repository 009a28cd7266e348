use serde::{Deserialize, Serialize};

use super::db::{Backend, Db, Row, Value, json};
use super::{StoreError, now_ms};
use crate::args;
use crate::events::ChartInfo;
/// What a manifest describes; its `kind` column holds [`ArtifactKind::as_str`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// A single-platform image (or any non-chart artifact with a config).
    #[default]
    Image,
    /// An image index / manifest list.
    Index,
    /// A Helm chart stored as an OCI artifact.
    Chart,
}

impl ArtifactKind {
    pub const ALL: [ArtifactKind; 3] = [
        ArtifactKind::Image,
        ArtifactKind::Index,
        ArtifactKind::Chart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Image => "image",
            ArtifactKind::Index => "index",
            ArtifactKind::Chart => "chart",
        }
    }

    pub fn parse(s: &str) -> Option<ArtifactKind> {
        ArtifactKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One manifest wharf has seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub repository: String,
    pub digest: String,
    pub kind: ArtifactKind,
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

fn parse<T: for<'de> Deserialize<'de> + Default>(s: Option<String>) -> T {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// Insert or replace an artifact. An artifact pushed again as it is (a new tag for the same
/// manifest, the usual CI retag) is not rewritten: on PostgreSQL every rewrite of the one row
/// left a dead version behind that the next upsert walked over (3.5 ms per push after 3,000
/// pushes of one manifest under new tags).
pub fn upsert_artifact(db: &Db<'_>, a: &Artifact) -> Result<(), StoreError> {
    upsert_artifact_at(db, a, now_ms())
}

/// The insert of an artifact's row, its values bound as [`Columns::args`] orders them; each
/// statement that writes one adds its own `ON CONFLICT`.
macro_rules! insert_artifact {
    () => {
        "INSERT INTO artifacts (repository, digest, kind, media_type, size, config_digest, chart, platforms, children, blobs, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    };
}

/// [`upsert_artifact`], a new row created at `now` (unix ms).
fn upsert_artifact_at(db: &Db<'_>, a: &Artifact, now: i64) -> Result<(), StoreError> {
    if let Some(cache) = db.cache() {
        cache.forget_unknown_repository(&a.repository);
    }
    let columns = Columns::of(a)?;
    db.exec_later(
        concat!(
            insert_artifact!(),
            " ON CONFLICT (repository, digest) DO UPDATE SET kind = excluded.kind, media_type = excluded.media_type,
           size = excluded.size, config_digest = excluded.config_digest, chart = excluded.chart,
           platforms = excluded.platforms, children = excluded.children, blobs = excluded.blobs
         WHERE artifacts.kind IS DISTINCT FROM excluded.kind
           OR artifacts.media_type IS DISTINCT FROM excluded.media_type
           OR artifacts.size IS DISTINCT FROM excluded.size
           OR artifacts.config_digest IS DISTINCT FROM excluded.config_digest
           OR artifacts.chart IS DISTINCT FROM excluded.chart
           OR artifacts.platforms IS DISTINCT FROM excluded.platforms
           OR artifacts.children IS DISTINCT FROM excluded.children
           OR artifacts.blobs IS DISTINCT FROM excluded.blobs"
        ),
        &columns.args(a, now),
    )?;
    Ok(())
}

/// Insert `a`'s row unless the manifest is known; whether this insert made it known. (On
/// PostgreSQL a concurrent push of the same manifest — another tag, another replica — that
/// inserted it first is waited for: then this one did not.)
fn insert_artifact_if_absent(db: &Db<'_>, a: &Artifact, now: i64) -> Result<bool, StoreError> {
    if let Some(cache) = db.cache() {
        cache.forget_unknown_repository(&a.repository);
    }
    let columns = Columns::of(a)?;
    Ok(db
        .int(
            concat!(
                insert_artifact!(),
                " ON CONFLICT (repository, digest) DO NOTHING RETURNING 1"
            ),
            &columns.args(a, now),
        )?
        .is_some())
}

/// An artifact's JSON columns, encoded once for the statements that write its row.
struct Columns {
    chart: Option<String>,
    platforms: String,
    children: String,
    blobs: String,
}

impl Columns {
    fn of(a: &Artifact) -> Result<Columns, StoreError> {
        Ok(Columns {
            chart: a.chart.as_ref().map(json).transpose()?,
            platforms: json(&a.platforms)?,
            children: json(&a.children)?,
            blobs: json(&a.blobs)?,
        })
    }

    /// `?1`…`?11`: repository, digest, kind, media_type, size, config_digest, chart,
    /// platforms, children, blobs, created_at (`now`).
    fn args<'v>(&'v self, a: &'v Artifact, now: i64) -> [Value<'v>; 11] {
        [
            Value::from(&a.repository),
            Value::from(&a.digest),
            Value::from(a.kind.as_str()),
            Value::from(a.media_type.as_deref()),
            Value::from(a.size.map(clamp_size)),
            Value::from(a.config_digest.as_deref()),
            Value::from(self.chart.as_deref()),
            Value::from(&self.platforms),
            Value::from(&self.children),
            Value::from(&self.blobs),
            Value::from(now),
        ]
    }
}

/// The project of `repository`: its first segment.
pub(crate) fn project_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

/// A size as stored (a BIGINT column): at most `i64::MAX`.
pub fn clamp_size(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// The artifact `digest` of `repository`, if known.
pub fn artifact(
    db: &Db<'_>,
    repository: &str,
    digest: &str,
) -> Result<Option<Artifact>, StoreError> {
    db.row(
        "SELECT kind, media_type, size, config_digest, chart, platforms, children, blobs
         FROM artifacts WHERE repository = ?1 AND digest = ?2",
        args![repository, digest],
        |r| artifact_row(r, repository, digest),
    )
    .map(Option::flatten)
}

/// An artifact from the columns `kind, media_type, size, config_digest, chart, platforms,
/// children, blobs` (`None`: `kind` is NULL, no artifact).
fn artifact_row(
    r: &Row<'_>,
    repository: &str,
    digest: &str,
) -> Result<Option<Artifact>, StoreError> {
    let Some(kind) = r.opt_text(0)? else {
        return Ok(None);
    };
    let kind = ArtifactKind::parse(&kind).ok_or(StoreError::NotArtifactKind {
        column: 0,
        value: kind,
    })?;
    Ok(Some(Artifact {
        repository: repository.to_string(),
        digest: digest.to_string(),
        kind,
        media_type: r.opt_text(1)?,
        size: r.opt_u64(2)?,
        config_digest: r.opt_text(3)?,
        chart: r.opt_text(4)?.and_then(|s| serde_json::from_str(&s).ok()),
        platforms: parse(r.opt_text(5)?),
        children: parse(r.opt_text(6)?),
        blobs: parse(r.opt_text(7)?),
    }))
}

/// [`artifact`] and the first-seen time of `repository` (unix ms, as [`repository_created`]
/// reads it) in one statement: a push's transaction needs both, and on PostgreSQL each
/// statement waited for is a round trip.
fn artifact_and_repository_created(
    db: &Db<'_>,
    repository: &str,
    digest: &str,
) -> Result<(Option<Artifact>, Option<i64>), StoreError> {
    let row = db.row(
        "SELECT a.kind, a.media_type, a.size, a.config_digest, a.chart, a.platforms, a.children, a.blobs, m.created
         FROM (SELECT MIN(created_at) AS created FROM artifacts WHERE repository = ?1) m
         LEFT JOIN artifacts a ON a.repository = ?1 AND a.digest = ?2",
        args![repository, digest],
        |r| Ok((artifact_row(r, repository, digest)?, r.opt_i64(8)?)),
    )?;
    Ok(row.unwrap_or((None, None)))
}

/// Sum of the known sizes of `digests` in `repository` (saturating), and how many were known.
pub fn known_size(
    db: &Db<'_>,
    repository: &str,
    digests: &[String],
) -> Result<(u64, usize), StoreError> {
    let (mut sum, mut known) = (0u64, 0usize);
    for d in digests {
        if let Some(s) = db.int(
            "SELECT size FROM artifacts WHERE repository = ?1 AND digest = ?2",
            args![repository, d],
        )? {
            sum = sum.saturating_add(s.max(0) as u64);
            known += 1;
        }
    }
    Ok((sum, known))
}

/// When wharf first saw a manifest of `repository` that it still knows (unix seconds):
/// Harbor's `repository.date_created`.
pub fn repository_created(db: &Db<'_>, repository: &str) -> Result<Option<i64>, StoreError> {
    Ok(db
        .int(
            "SELECT MIN(created_at) FROM artifacts WHERE repository = ?1",
            args![repository],
        )?
        .map(|ms| ms.div_euclid(1000)))
}

/// [`repository_created`] through the process's cache (see [`super::REPOSITORY_DATE_TTL`]):
/// every event of an artifact carries it, and on PostgreSQL each statement waited for is a
/// round trip.
pub fn repository_created_cached(db: &Db<'_>, repository: &str) -> Result<Option<i64>, StoreError> {
    if let Some(created) = db.cache().and_then(|c| c.repository_created(repository)) {
        return Ok(created);
    }
    let created = repository_created(db, repository)?;
    if let Some(cache) = db.cache() {
        cache.put_repository_created(repository, created);
    }
    Ok(created)
}

/// Point `tag` of `repository` at `digest`.
pub fn set_tag(db: &Db<'_>, repository: &str, tag: &str, digest: &str) -> Result<(), StoreError> {
    db.exec_later(
        "INSERT INTO tags (repository, tag, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
        args![repository, tag, digest, now_ms()],
    )?;
    Ok(())
}

/// Tags of `repository` known to point at `digest`, sorted.
pub fn tags_of(db: &Db<'_>, repository: &str, digest: &str) -> Result<Vec<String>, StoreError> {
    db.rows(
        "SELECT tag FROM tags WHERE repository = ?1 AND digest = ?2 ORDER BY tag",
        args![repository, digest],
        |r| r.text(0),
    )
}

/// The digest `tag` of `repository` points at, as far as wharf knows.
pub fn digest_of_tag(
    db: &Db<'_>,
    repository: &str,
    tag: &str,
) -> Result<Option<String>, StoreError> {
    db.text(
        "SELECT digest FROM tags WHERE repository = ?1 AND tag = ?2",
        args![repository, tag],
    )
}

/// What learning a manifest changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// wharf did not know the manifest before.
    pub new: bool,
    /// The project's usage before and after, when the manifest was new.
    pub usage: Option<(u64, u64)>,
    /// When wharf first saw a manifest of the repository (unix seconds), this one included:
    /// what [`repository_created`] reads after this transaction.
    pub repository_created: Option<i64>,
}

/// Learn a manifest seen pushed (or found by `wharf quota rescan`): remember it and its tag,
/// and when it is new to wharf count the blobs it references in its project's usage.
pub fn learn_manifest(db: &Db<'_>, a: &Artifact, tag: Option<&str>) -> Result<Learned, StoreError> {
    hold_manifest(db, &a.repository, &a.digest, Hold::Push)?;
    let (known, created) = artifact_and_repository_created(db, &a.repository, &a.digest)?;
    let now = now_ms();
    // new: decided by the insert, not by the read before it — two pushes of one new manifest
    // at once (buildx pushes its tags in parallel) both read "unknown", and counting its blobs
    // twice would keep them counted after its delete
    let new = known.is_none() && insert_artifact_if_absent(db, a, now)?;
    // the same manifest again (a retag): nothing to write, and no row lock that concurrent
    // pushes of it would queue behind until this transaction commits
    if !new && known.as_ref() != Some(a) {
        upsert_artifact_at(db, a, now)?;
    }
    if let (Some(cache), Some(c)) = (db.cache(), created) {
        cache.put_repository_created(&a.repository, Some(c.div_euclid(1000)));
    }
    let created = match (created, new) {
        (Some(c), true) => Some(c.min(now)),
        (None, true) => Some(now),
        (c, false) => c,
    };
    let usage = if new {
        Some(super::quota::add_refs(
            db,
            project_of(&a.repository),
            &a.blobs,
        )?)
    } else {
        None
    };
    // the tag last: a delete takes the artifact's row, the project's row and then the tags,
    // and a push moving a tag away from the deleted manifest takes them in the same order
    // (the tag before the project's row, they could wait for each other: a deadlock)
    if let Some(t) = tag {
        set_tag(db, &a.repository, t, &a.digest)?;
    }
    Ok(Learned {
        new,
        usage,
        repository_created: created.map(|ms| ms.div_euclid(1000)),
    })
}

/// Learn a pushed manifest as [`learn_manifest`] does, without reading anything back: on
/// PostgreSQL it is one function call, carried into the job's next statement ([`Db::carry`]:
/// the push's event insert runs it) and not waited for, so a push's transaction is one round
/// trip instead of two, and usually one statement. The database decides what the client would
/// have: the artifact is inserted, or rewritten only when it changed (a retag writes nothing
/// and locks nothing); when the insert made it new, its blobs are counted in the project's
/// usage under the project's row lock, in the order [`learn_manifest`] takes its locks.
/// Two pushes of one new manifest, through one replica or two, count it once. The statement
/// calls the function `wharf_learn_pushed` (schema 24), which runs what were six statements
/// one after the other: each statement sent costs the server more than most of them take
/// to run.
///
/// For a push that needs neither the usage before and after (its project has no storage
/// limit) nor the repository's first-seen time (the caller has it). SQLite:
/// [`learn_manifest`], whose answers cost no round trip.
pub fn learn_pushed(db: &Db<'_>, a: &Artifact, tag: Option<&str>) -> Result<(), StoreError> {
    if db.backend() == Backend::Sqlite {
        return learn_manifest(db, a, tag).map(|_| ());
    }
    let columns = Columns::of(a)?;
    let key = super::advisory_key(&["wharf manifest", &a.repository, &a.digest]);
    // the manifest's lock, the artifact's columns (?2–?12), its project, its blob count, the tag
    let mut args = Vec::with_capacity(15);
    args.push(Value::from(key));
    args.extend(columns.args(a, now_ms()));
    args.extend([
        Value::from(project_of(&a.repository)),
        Value::from(i64::try_from(a.blobs.len()).unwrap_or(i64::MAX)),
        Value::from(tag),
    ]);
    db.carry(
        "wharf_learn_pushed(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        &args,
    )
}

/// Who takes a manifest's lock ([`hold_manifest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Shared with other pushes of it (pushes of one manifest do not queue behind each other).
    Push,
    /// Alone: waits for the pushes of it in progress, which then wait for it.
    Delete,
}

/// PostgreSQL: take `repository`'s manifest `digest`'s advisory lock until the transaction
/// ends (sent ahead, not waited for). A delete settling ([`forget_deleted`]) and a push of the
/// same manifest through another replica are so put in an order: the delete sees the push's
/// tag, or the push finds the manifest forgotten and counts it anew — where without it the
/// delete could forget a manifest the push then tagged. SQLite's one writer orders them anyway.
fn hold_manifest(
    db: &Db<'_>,
    repository: &str,
    digest: &str,
    hold: Hold,
) -> Result<(), StoreError> {
    if db.backend() != Backend::Postgres {
        return Ok(());
    }
    let sql = match hold {
        Hold::Push => "SELECT pg_advisory_xact_lock_shared(?1)",
        Hold::Delete => "SELECT pg_advisory_xact_lock(?1)",
    };
    let key = super::advisory_key(&["wharf manifest", repository, digest]);
    db.exec_later(sql, args![key])?;
    Ok(())
}

/// Forget a manifest whose delete went to the registry at `sent_at` (unix ms) and was
/// accepted — unless a tag was pushed to it since (the same digest pushed again while the
/// delete's tags were being checked, committed first): then the registry holds it again, so it
/// stays known and counted, and only the tags it had before go. (A push of it by digest alone,
/// with no tag, is not told apart.) Returns the usage before and after, when forgotten.
pub fn forget_deleted(
    db: &Db<'_>,
    repository: &str,
    digest: &str,
    sent_at: i64,
) -> Result<Option<(u64, u64)>, StoreError> {
    // a push of it in progress through another replica commits first: its tag is then seen
    hold_manifest(db, repository, digest, Hold::Delete)?;
    let pushed_again = db
        .int(
            "SELECT 1 FROM tags WHERE repository = ?1 AND digest = ?2 AND updated_at > ?3 LIMIT 1",
            args![repository, digest, sent_at],
        )?
        .is_some();
    if pushed_again {
        db.exec(
            "DELETE FROM tags WHERE repository = ?1 AND digest = ?2 AND updated_at <= ?3",
            args![repository, digest, sent_at],
        )?;
        return Ok(None);
    }
    forget_manifest(db, repository, digest)
}

/// Forget a deleted manifest: its tags, and the space its blobs took (blobs other manifests
/// of the project use stay counted). Returns the project's usage before and after, when wharf
/// knew the manifest.
pub fn forget_manifest(
    db: &Db<'_>,
    repository: &str,
    digest: &str,
) -> Result<Option<(u64, u64)>, StoreError> {
    // the row deleted first: only the transaction whose DELETE took it gives its blobs back
    // (two deletes of one manifest at once, through two replicas, give them back once), and
    // the artifact's row is locked before the project's, as a push locks them
    let gone = db
        .row(
            "DELETE FROM artifacts WHERE repository = ?1 AND digest = ?2
             RETURNING kind, media_type, size, config_digest, chart, platforms, children, blobs",
            args![repository, digest],
            |r| artifact_row(r, repository, digest),
        )?
        .flatten();
    let usage = match gone {
        Some(gone) => Some(super::quota::remove_refs(
            db,
            project_of(repository),
            &gone.blobs,
        )?),
        None => None,
    };
    if let Some(cache) = db.cache() {
        cache.forget_repository(repository);
    }
    db.exec(
        "DELETE FROM tags WHERE repository = ?1 AND digest = ?2",
        args![repository, digest],
    )?;
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An artifact's kind is stored by its name (`kind` column, and the cache's JSON): each
    /// name is one kind's and reads back as it; a row with another is an error, not an image.
    #[test]
    fn artifact_kinds_are_named_once_and_unknown_ones_are_refused() {
        for kind in ArtifactKind::ALL {
            assert_eq!(ArtifactKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::json!(kind), serde_json::json!(kind.as_str()));
        }
        assert_eq!(ArtifactKind::parse("Image"), None);
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open_sqlite(dir.path(), crate::store::Synchronous::Normal)
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            store
                .write(|db| {
                    let a = Artifact {
                        repository: "prj/app".into(),
                        digest: format!("sha256:{}", "a".repeat(64)),
                        ..Artifact::default()
                    };
                    upsert_artifact(db, &a)?;
                    db.exec("UPDATE artifacts SET kind = 'helm'", &[])?;
                    Ok(())
                })
                .await
                .unwrap();
            let read = store
                .read(|db| artifact(db, "prj/app", &format!("sha256:{}", "a".repeat(64))))
                .await;
            assert!(
                matches!(read, Err(StoreError::NotArtifactKind { ref value, .. }) if value == "helm"),
                "{read:?}"
            );
        });
    }
}
