//! Projects: every project wharf knows — from the config, from policies, or seen in traffic —
//! with the numeric id the store assigned once (never reused, the same on every replica).
//!
//! Seeing a project in traffic costs a write only the first time a process meets its name
//! ([`Known`]): the event that names it inserts the row in its own transaction when the name is
//! new to the process (`INSERT … ON CONFLICT DO NOTHING`), nothing afterwards.

use std::collections::HashSet;
use std::sync::Mutex;

use super::StoreError;
use super::db::Db;
use crate::args;

/// One project row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: i64,
    pub name: String,
    /// unix ms
    pub created_at: i64,
}

fn row(r: &super::db::Row<'_>) -> Result<Project, StoreError> {
    Ok(Project {
        id: r.i64(0)?,
        name: r.text(1)?,
        created_at: r.i64(2)?,
    })
}

/// Every project, by name (byte order, the same on both backends).
pub fn list(db: &Db<'_>) -> Result<Vec<Project>, StoreError> {
    let mut all = db.rows("SELECT id, name, created_at FROM projects", &[], row)?;
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// A project by name.
pub fn by_name(db: &Db<'_>, name: &str) -> Result<Option<Project>, StoreError> {
    db.row(
        "SELECT id, name, created_at FROM projects WHERE name = ?1",
        args![name],
        row,
    )
}

/// A project by id.
pub fn by_id(db: &Db<'_>, id: i64) -> Result<Option<Project>, StoreError> {
    db.row(
        "SELECT id, name, created_at FROM projects WHERE id = ?1",
        args![id],
        row,
    )
}

/// The prefix of the repositories of project `name` (`name/`) and its length in characters,
/// for `substr(repository, 1, <len>) = <prefix>`: a prefix compared with `substr`, not a range
/// or `LIKE` — PostgreSQL's collations do not order `/` as bytes do, and SQLite's `LIKE`
/// ignores case.
pub(crate) fn repository_prefix(name: &str) -> (String, i64) {
    let prefix = format!("{name}/");
    let len = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
    (prefix, len)
}

/// How many repositories of project `name` wharf knows (has seen a manifest of).
pub fn repo_count(db: &Db<'_>, name: &str) -> Result<u64, StoreError> {
    let (prefix, len) = repository_prefix(name);
    Ok(db
        .int(
            "SELECT COUNT(DISTINCT repository) FROM artifacts WHERE substr(repository, 1, ?2) = ?1",
            args![&prefix, len],
        )?
        .unwrap_or(0)
        .max(0) as u64)
}

/// Give every name in `names` a row (ids for the projects of the config).
pub fn ensure_all<'a>(
    db: &Db<'_>,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), StoreError> {
    for n in names {
        super::policies::ensure_project(db, n)?;
    }
    Ok(())
}

/// The project names this process knows have a row (bounded: past the bound it forgets them
/// all, which costs one harmless insert-if-missing per name again).
#[derive(Debug, Default)]
pub struct Known {
    names: Mutex<HashSet<String>>,
}

/// Most names [`Known`] holds.
const KNOWN_MAX: usize = 100_000;

impl Known {
    /// Is `name` known to have a row?
    pub fn contains(&self, name: &str) -> bool {
        self.names.lock().map(|s| s.contains(name)).unwrap_or(false)
    }

    /// Remember that `name` has a row (after the commit that made sure of it).
    pub fn insert(&self, name: &str) {
        if let Ok(mut s) = self.names.lock() {
            if s.len() >= KNOWN_MAX {
                s.clear();
            }
            s.insert(name.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first event of a project in this process writes its row; later ones do not.
    #[test]
    fn known_names_are_remembered_and_bounded() {
        let k = Known::default();
        assert!(!k.contains("prj"));
        k.insert("prj");
        assert!(k.contains("prj"));
        for i in 0..KNOWN_MAX {
            k.insert(&format!("p{i}"));
        }
        // past the bound everything was forgotten once: one more insert-if-missing each
        assert!(!k.contains("prj"));
        assert!(k.names.lock().unwrap().len() <= KNOWN_MAX);
    }

    #[test]
    fn ids_are_assigned_once_on_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::sqlite::migrate(&conn).unwrap();
        let db = Db::sqlite(&conn);
        let names = vec!["b".to_string(), "a".to_string(), "b".to_string()];
        ensure_all(&db, &names).unwrap();
        let all = list(&db).unwrap();
        assert_eq!(
            all.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let b = by_name(&db, "b").unwrap().unwrap();
        assert_eq!(b.id, 1, "b came first");
        assert_eq!(by_id(&db, b.id).unwrap(), Some(b));
    }
}
