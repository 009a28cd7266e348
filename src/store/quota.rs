//! Quota usage: a project uses the sum of the sizes of the unique blobs (configs and layers)
//! referenced by its manifests. Each blob is counted once per project however many manifests
//! or repositories reference it; a manifest's blobs are counted when wharf first learns the
//! manifest (a push through wharf, or `wharf quota rescan`) and given back when it is deleted.

use std::collections::{BTreeMap, BTreeSet};

use super::StoreError;
use super::db::{Backend, Db, json};
use super::knowledge::{clamp_size, project_of};
use crate::args;

fn unique(blobs: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = blobs.to_vec();
    v.sort();
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

/// Bytes the project uses now (one row: constant time, whatever the project holds).
pub fn usage(db: &Db<'_>, project: &str) -> Result<u64, StoreError> {
    Ok(db
        .int(
            "SELECT usage FROM quota_projects WHERE project = ?1",
            args![project],
        )?
        .unwrap_or(0)
        .max(0) as u64)
}

/// The project's usage row, locked for the rest of the transaction (PostgreSQL: a row lock,
/// so concurrent pushes to one project take turns; SQLite: the single writer already
/// serializes them). Created when missing. Returns (usage, warned).
fn lock_project(db: &Db<'_>, project: &str) -> Result<(u64, bool), StoreError> {
    db.exec(
        "INSERT INTO quota_projects (project, usage, warned) VALUES (?1, 0, 0) ON CONFLICT (project) DO NOTHING",
        args![project],
    )?;
    let sql = match db.backend() {
        Backend::Sqlite => "SELECT usage, warned FROM quota_projects WHERE project = ?1",
        Backend::Postgres => {
            "SELECT usage, warned FROM quota_projects WHERE project = ?1 FOR UPDATE"
        }
    };
    Ok(db
        .row(sql, args![project], |r| Ok((r.u64(0)?, r.i64(1)? != 0)))?
        .unwrap_or((0, false)))
}

fn set_usage(db: &Db<'_>, project: &str, usage: u64) -> Result<(), StoreError> {
    db.exec(
        "UPDATE quota_projects SET usage = ?2 WHERE project = ?1",
        args![project, clamp_size(usage)],
    )?;
    Ok(())
}

/// Bytes that referencing `blobs` would add to the project (those it does not reference yet).
pub fn adding(db: &Db<'_>, project: &str, blobs: &[(String, u64)]) -> Result<u64, StoreError> {
    Ok(not_counted(db, project, blobs)?
        .iter()
        .fold(0u64, |sum, (_, size)| sum.saturating_add(*size)))
}

/// Which of `blobs` (once each) the project does not count yet: one statement.
pub fn not_counted(
    db: &Db<'_>,
    project: &str,
    blobs: &[(String, u64)],
) -> Result<Vec<(String, u64)>, StoreError> {
    let mine = unique(blobs);
    let asked: BTreeSet<&str> = mine.iter().map(|(d, _)| d.as_str()).collect();
    let counted = counted_among(db, project, &asked)?;
    Ok(mine
        .into_iter()
        .filter(|(d, _)| !counted.contains(d))
        .collect())
}

/// The outcome of [`reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Space held for this push until it is committed ([`add_refs`] with the id) or released.
    Reserved { id: i64 },
    /// The manifest references no blobs (an index): nothing to hold.
    NothingNew,
    /// Over the limit. `usage` includes the space other pushes in progress hold.
    Exceeded { adding: u64, usage: u64, limit: u64 },
}

/// Reserve the space a push of a manifest referencing `blobs` would add to `project`, before
/// the registry sees the manifest: under the project's row lock, against the usage plus what
/// other pushes in progress hold, so racing pushes — through one replica or several — can
/// never take the project past `limit` together. A reservation lapses `lapse_ms` after it is
/// written (once it has the project's row) if its push never comes back (the process died).
///
/// A reservation lists every blob of its push, also those the project counts already: a
/// delete committed meanwhile may stop counting them, and the push then counts them again
/// when it lands. A held blob weighs only while the project does not count it — so neither
/// such a delete nor a push committed before its reservation is given back makes a blob
/// count twice, or not at all.
pub fn reserve(
    db: &Db<'_>,
    project: &str,
    blobs: &[(String, u64)],
    limit: u64,
    lapse_ms: i64,
) -> Result<Reservation, StoreError> {
    let mine = unique(blobs);
    if mine.is_empty() {
        return Ok(Reservation::NothingNew);
    }
    let (usage, _) = lock_project(db, project)?;
    // (after the lock, which another push's transaction may have held for a while)
    let now = super::now_ms();
    let expires_at = now.saturating_add(lapse_ms);
    // every blob held by a push in progress, once, with its size (a blob two pushes share is
    // listed by both: it stays held while either is in progress); rows written before sizes
    // were kept hold their total
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    let mut held_unlisted = 0u64;
    for (bytes, list) in db.rows(
        "SELECT bytes, blobs FROM quota_reservations WHERE project = ?1 AND expires_at > ?2",
        args![project, now],
        |r| Ok((r.u64(0)?, r.text(1)?)),
    )? {
        match serde_json::from_str::<Vec<(String, u64)>>(&list) {
            Ok(sized) => held.extend(sized),
            Err(_) => held_unlisted = held_unlisted.saturating_add(bytes),
        }
    }
    let asked: BTreeSet<&str> = held
        .keys()
        .map(String::as_str)
        .chain(mine.iter().map(|(d, _)| d.as_str()))
        .collect();
    let counted = counted_among(db, project, &asked)?;
    let reserved = held
        .iter()
        .filter(|(d, _)| !counted.contains(d.as_str()))
        .fold(held_unlisted, |sum, (_, size)| sum.saturating_add(*size));
    let adding = mine
        .iter()
        .filter(|(d, _)| !counted.contains(d.as_str()) && !held.contains_key(d))
        .fold(0u64, |sum, (_, size)| sum.saturating_add(*size));
    let taken = usage.saturating_add(reserved);
    if adding > 0 && taken.saturating_add(adding) > limit {
        return Ok(Reservation::Exceeded {
            adding,
            usage: taken,
            limit,
        });
    }
    let id = db
        .int(
            "INSERT INTO quota_reservations (project, bytes, blobs, expires_at) VALUES (?1, ?2, ?3, ?4) RETURNING id",
            args![project, clamp_size(adding), &json(&mine)?, expires_at],
        )?
        .ok_or(StoreError::Closed)?;
    Ok(Reservation::Reserved { id })
}

/// Which of `digests` the project counts now (referenced by a manifest wharf knows): one
/// statement, whatever their number.
fn counted_among(
    db: &Db<'_>,
    project: &str,
    digests: &BTreeSet<&str>,
) -> Result<BTreeSet<String>, StoreError> {
    let sql = match db.backend() {
        Backend::Sqlite => {
            "SELECT digest FROM project_blobs WHERE project = ?1 AND refs > 0
               AND digest IN (SELECT value FROM json_each(?2))"
        }
        Backend::Postgres => {
            "SELECT digest FROM project_blobs WHERE project = ?1 AND refs > 0
               AND digest IN (SELECT jsonb_array_elements_text(CAST(?2 AS jsonb)))"
        }
    };
    Ok(db
        .rows(sql, args![project, &json(digests)?], |r| r.text(0))?
        .into_iter()
        .collect())
}

/// Give back a reservation (its push failed, or was committed).
pub fn release(db: &Db<'_>, id: i64) -> Result<(), StoreError> {
    // (sent ahead on PostgreSQL: nothing waits for its answer, a failure fails the commit)
    db.exec_later("DELETE FROM quota_reservations WHERE id = ?1", args![id])
}

/// Remove lapsed reservations.
pub fn prune_reservations(db: &Db<'_>, now: i64) -> Result<u64, StoreError> {
    db.exec(
        "DELETE FROM quota_reservations WHERE expires_at <= ?1",
        args![now],
    )
}

/// A new manifest of the project references `blobs`: count the ones it did not reference yet.
/// Returns the usage before and after (sizes added with saturation, never wrapping).
pub fn add_refs(
    db: &Db<'_>,
    project: &str,
    blobs: &[(String, u64)],
) -> Result<(u64, u64), StoreError> {
    let (before, _) = lock_project(db, project)?;
    let mut after = before;
    for (d, size) in unique(blobs) {
        let refs = db.int(
            "INSERT INTO project_blobs (project, digest, size, refs) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (project, digest) DO UPDATE SET refs = project_blobs.refs + 1
             RETURNING refs",
            args![project, &d, clamp_size(size)],
        )?;
        if refs == Some(1) {
            after = after.saturating_add(size);
        }
    }
    if after != before {
        set_usage(db, project, after)?;
    }
    Ok((before, after))
}

/// A manifest of the project that referenced `blobs` was deleted: blobs no other manifest
/// references are given back. Returns the usage before and after.
pub fn remove_refs(
    db: &Db<'_>,
    project: &str,
    blobs: &[(String, u64)],
) -> Result<(u64, u64), StoreError> {
    let (before, _) = lock_project(db, project)?;
    let mut after = before;
    for (d, _) in unique(blobs) {
        let left = db.row(
            "UPDATE project_blobs SET refs = refs - 1 WHERE project = ?1 AND digest = ?2 RETURNING refs, size",
            args![project, &d],
            |r| Ok((r.i64(0)?, r.u64(1)?)),
        )?;
        if let Some((refs, size)) = left
            && refs <= 0
        {
            after = after.saturating_sub(size);
        }
    }
    db.exec(
        "DELETE FROM project_blobs WHERE project = ?1 AND refs <= 0",
        args![project],
    )?;
    if after != before {
        set_usage(db, project, after)?;
    }
    Ok((before, after))
}

/// Recount every project's usage from the manifests wharf knows: each known manifest
/// references its blobs once. Makes usage agree with the knowledge whatever happened before,
/// e.g. manifests learned by a wharf that did not count usage yet (before quotas existed).
///
/// One transaction per project ([`recount_project`]), under the project's row lock, so pushes
/// and deletes committing meanwhile — through this replica or another — are counted once: a
/// push that holds the lock commits first and is read back; one that takes it later adds its
/// blobs to the recounted figures. (Recounting the whole store in one transaction read the
/// manifests before taking any lock: a push committing in between was left out of the usage
/// while its blobs stayed recorded as counted. The locks are also held one project at a time,
/// not across the whole recount.)
pub async fn recount(store: &super::Store) -> Result<(), StoreError> {
    for project in store.read(recount_projects).await? {
        store
            .write(move |db| recount_project(db, &project).map(|_| ()))
            .await?;
    }
    Ok(())
}

/// The projects a recount visits: those of known manifests, and those with usage recorded.
pub fn recount_projects(db: &Db<'_>) -> Result<Vec<String>, StoreError> {
    let mut projects = BTreeSet::new();
    for repository in db.rows("SELECT DISTINCT repository FROM artifacts", &[], |r| {
        r.text(0)
    })? {
        projects.insert(project_of(&repository).to_string());
    }
    projects.extend(db.rows(
        "SELECT project FROM quota_projects UNION SELECT project FROM project_blobs",
        &[],
        |r| r.text(0),
    )?);
    Ok(projects.into_iter().collect())
}

/// Recount one project's usage from its known manifests, under its row lock (every write of
/// its usage and blob counts takes that lock first). Returns the usage.
pub fn recount_project(db: &Db<'_>, project: &str) -> Result<u64, StoreError> {
    lock_project(db, project)?;
    // the manifests read after the lock: every push that held it has committed
    let (prefix, len) = super::projects::repository_prefix(project);
    let rows = db.rows(
        "SELECT blobs FROM artifacts WHERE repository = ?1 OR substr(repository, 1, ?3) = ?2",
        args![project, &prefix, len],
        |r| r.opt_text(0),
    )?;
    let mut refs: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for blobs in rows {
        let blobs: Vec<(String, u64)> = blobs
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default();
        for (d, size) in unique(&blobs) {
            refs.entry(d).or_insert((size, 0)).1 += 1;
        }
    }
    db.exec(
        "DELETE FROM project_blobs WHERE project = ?1",
        args![project],
    )?;
    let mut usage = 0u64;
    for (digest, (size, n)) in &refs {
        db.exec_later(
            "INSERT INTO project_blobs (project, digest, size, refs) VALUES (?1, ?2, ?3, ?4)",
            args![project, digest, clamp_size(*size), *n],
        )?;
        usage = usage.saturating_add(*size);
    }
    set_usage(db, project, usage)?;
    Ok(usage)
}

/// Was the warning for the current crossing already sent?
pub fn warned(db: &Db<'_>, project: &str) -> Result<bool, StoreError> {
    Ok(db
        .int(
            "SELECT warned FROM quota_projects WHERE project = ?1",
            args![project],
        )?
        .unwrap_or(0)
        != 0)
}

/// Remember whether the warning for the current crossing was sent.
pub fn set_warned(db: &Db<'_>, project: &str, warned: bool) -> Result<(), StoreError> {
    db.exec(
        "INSERT INTO quota_projects (project, usage, warned) VALUES (?1, 0, ?2)
         ON CONFLICT (project) DO UPDATE SET warned = excluded.warned",
        args![project, warned],
    )?;
    Ok(())
}

/// Every project with usage, and its usage.
pub fn all_usage(db: &Db<'_>) -> Result<Vec<(String, u64)>, StoreError> {
    super::grouped_counts(
        db,
        "SELECT project, usage FROM quota_projects WHERE usage > 0 ORDER BY project",
    )
}
