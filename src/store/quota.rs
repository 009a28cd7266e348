//! Quota usage: a project uses the sum of the sizes of the unique blobs (configs and layers)
//! referenced by its manifests. Each blob is counted once per project however many manifests
//! or repositories reference it; a manifest's blobs are counted when wharf first learns the
//! manifest (a push through wharf, or `wharf quota rescan`) and given back when it is deleted.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

fn unique(blobs: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = blobs.to_vec();
    v.sort();
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

/// Bytes the project uses now.
pub fn usage(conn: &Connection, project: &str) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(size), 0) FROM project_blobs WHERE project = ?1 AND refs > 0",
        )?
        .query_row([project], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// Bytes that referencing `blobs` would add to the project (those it does not reference yet).
pub fn adding(
    conn: &Connection,
    project: &str,
    blobs: &[(String, u64)],
) -> Result<u64, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT refs FROM project_blobs WHERE project = ?1 AND digest = ?2")?;
    let mut sum = 0u64;
    for (d, size) in unique(blobs) {
        let refs: Option<i64> = stmt
            .query_row(params![project, d], |r| r.get(0))
            .optional()?;
        if refs.unwrap_or(0) <= 0 {
            sum += size;
        }
    }
    Ok(sum)
}

/// A new manifest of the project references `blobs`.
pub fn add_refs(
    conn: &Connection,
    project: &str,
    blobs: &[(String, u64)],
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO project_blobs (project, digest, size, refs) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (project, digest) DO UPDATE SET refs = refs + 1",
    )?;
    for (d, size) in unique(blobs) {
        stmt.execute(params![project, d, size as i64])?;
    }
    Ok(())
}

/// A manifest of the project that referenced `blobs` was deleted.
pub fn remove_refs(
    conn: &Connection,
    project: &str,
    blobs: &[(String, u64)],
) -> Result<(), StoreError> {
    let mut dec = conn.prepare_cached(
        "UPDATE project_blobs SET refs = refs - 1 WHERE project = ?1 AND digest = ?2",
    )?;
    for (d, _) in unique(blobs) {
        dec.execute(params![project, d])?;
    }
    conn.prepare_cached("DELETE FROM project_blobs WHERE project = ?1 AND refs <= 0")?
        .execute([project])?;
    Ok(())
}

/// Recount every project's usage from the manifests wharf knows: each known manifest
/// references its blobs once. Makes usage agree with the knowledge whatever happened before,
/// e.g. manifests learned by a wharf that did not count usage yet (before quotas existed).
pub fn recount(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM project_blobs")?
        .execute([])?;
    let mut stmt = conn.prepare_cached("SELECT repository, blobs FROM artifacts")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (repository, blobs) in rows {
        let blobs: Vec<(String, u64)> = blobs
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default();
        let project = repository.split('/').next().unwrap_or(&repository);
        add_refs(conn, project, &blobs)?;
    }
    Ok(())
}

/// Was the warning for the current crossing already sent?
pub fn warned(conn: &Connection, project: &str) -> Result<bool, StoreError> {
    let w: Option<i64> = conn
        .prepare_cached("SELECT warned FROM quota_state WHERE project = ?1")?
        .query_row([project], |r| r.get(0))
        .optional()?;
    Ok(w.unwrap_or(0) != 0)
}

/// Remember whether the warning for the current crossing was sent.
pub fn set_warned(conn: &Connection, project: &str, warned: bool) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO quota_state (project, warned) VALUES (?1, ?2)
         ON CONFLICT (project) DO UPDATE SET warned = excluded.warned",
    )?
    .execute(params![project, warned as i64])?;
    Ok(())
}

/// Every project with usage, and its usage.
pub fn all_usage(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    super::grouped_counts(
        conn,
        "SELECT project, SUM(size) FROM project_blobs WHERE refs > 0 GROUP BY project ORDER BY project",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE project_blobs (project TEXT, digest TEXT, size INTEGER, refs INTEGER, PRIMARY KEY (project, digest));
             CREATE TABLE quota_state (project TEXT PRIMARY KEY, warned INTEGER NOT NULL);
             CREATE TABLE artifacts (repository TEXT, digest TEXT, blobs TEXT, PRIMARY KEY (repository, digest));",
        )
        .unwrap();
        c
    }

    #[test]
    fn shared_blobs_count_once_and_come_back_on_delete() {
        let c = db();
        let a = vec![
            ("c1".to_string(), 10),
            ("l1".to_string(), 100),
            ("l2".to_string(), 200),
        ];
        let b = vec![("c2".to_string(), 20), ("l1".to_string(), 100)];
        assert_eq!(adding(&c, "p", &a).unwrap(), 310);
        add_refs(&c, "p", &a).unwrap();
        assert_eq!(usage(&c, "p").unwrap(), 310);
        assert_eq!(adding(&c, "p", &b).unwrap(), 20, "l1 is already counted");
        add_refs(&c, "p", &b).unwrap();
        assert_eq!(usage(&c, "p").unwrap(), 330);
        assert_eq!(usage(&c, "other").unwrap(), 0);
        remove_refs(&c, "p", &a).unwrap();
        assert_eq!(usage(&c, "p").unwrap(), 120, "l1 still referenced by b");
        remove_refs(&c, "p", &b).unwrap();
        assert_eq!(usage(&c, "p").unwrap(), 0);
        assert!(!warned(&c, "p").unwrap());
        set_warned(&c, "p", true).unwrap();
        assert!(warned(&c, "p").unwrap());
    }

    #[test]
    fn recount_follows_the_known_manifests() {
        let c = db();
        let blobs = |v: &[(&str, u64)]| {
            serde_json::to_string(
                &v.iter()
                    .map(|(d, s)| (d.to_string(), *s))
                    .collect::<Vec<_>>(),
            )
            .unwrap()
        };
        c.execute(
            "INSERT INTO artifacts VALUES ('p/a', 'm1', ?1), ('p/b', 'm2', ?2), ('q/a', 'm1', ?1), ('p/i', 'idx', NULL)",
            params![blobs(&[("c1", 10), ("l1", 100)]), blobs(&[("c2", 20), ("l1", 100)])],
        )
        .unwrap();
        // stale counts of a blob nobody references any more
        add_refs(&c, "p", &[("gone".to_string(), 5000)]).unwrap();
        recount(&c).unwrap();
        assert_eq!(usage(&c, "p").unwrap(), 130);
        assert_eq!(usage(&c, "q").unwrap(), 110);
        // l1 is referenced twice in p: deleting one manifest keeps it
        remove_refs(&c, "p", &[("c1".to_string(), 10), ("l1".to_string(), 100)]).unwrap();
        assert_eq!(usage(&c, "p").unwrap(), 120);
        recount(&c).unwrap();
        assert_eq!(usage(&c, "p").unwrap(), 130, "idempotent");
    }
}
