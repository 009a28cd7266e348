//! Charts: what wharf learned about classic (ChartMuseum) chart versions from their uploads, so
//! download and delete events can carry the chart's type, appVersion and size, which the
//! request path alone does not show.

use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, now_ms};

/// One chart version of a project's classic chart repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChartFacts {
    pub project: String,
    pub name: String,
    pub version: String,
    /// `application` or `library`.
    pub chart_type: String,
    pub app_version: Option<String>,
    /// Size of the `.tgz` in bytes.
    pub size: Option<u64>,
}

/// Insert or replace the facts of a chart version (an upload, or an overwrite).
pub fn remember(conn: &Connection, c: &ChartFacts) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO charts (project, name, version, type, app_version, size, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (project, name, version) DO UPDATE SET type = excluded.type,
           app_version = excluded.app_version, size = excluded.size,
           updated_at = excluded.updated_at",
    )?
    .execute(params![
        c.project,
        c.name,
        c.version,
        c.chart_type,
        c.app_version,
        c.size.map(|s| s.min(i64::MAX as u64) as i64),
        now_ms(),
    ])?;
    Ok(())
}

/// The facts of `name` `version` in `project`, if known.
pub fn get(
    conn: &Connection,
    project: &str,
    name: &str,
    version: &str,
) -> Result<Option<ChartFacts>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT type, app_version, size FROM charts
             WHERE project = ?1 AND name = ?2 AND version = ?3",
        )?
        .query_row(params![project, name, version], |r| {
            Ok(ChartFacts {
                project: project.to_string(),
                name: name.to_string(),
                version: version.to_string(),
                chart_type: r.get(0)?,
                app_version: r.get(1)?,
                size: r.get::<_, Option<i64>>(2)?.map(|s| s.max(0) as u64),
            })
        })
        .optional()?)
}

/// Forget a chart version (it was deleted).
pub fn forget(
    conn: &Connection,
    project: &str,
    name: &str,
    version: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM charts WHERE project = ?1 AND name = ?2 AND version = ?3")?
        .execute(params![project, name, version])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        super::super::migrate(&conn).unwrap();
        conn
    }

    #[test]
    fn remember_get_overwrite_forget() {
        let c = db();
        assert_eq!(get(&c, "prj", "web", "1.0.0").unwrap(), None);
        let mut f = ChartFacts {
            project: "prj".into(),
            name: "web".into(),
            version: "1.0.0".into(),
            chart_type: "application".into(),
            app_version: Some("2.4".into()),
            size: Some(1234),
        };
        remember(&c, &f).unwrap();
        assert_eq!(get(&c, "prj", "web", "1.0.0").unwrap(), Some(f.clone()));
        assert_eq!(get(&c, "other", "web", "1.0.0").unwrap(), None);
        f.chart_type = "library".into();
        f.app_version = None;
        f.size = None;
        remember(&c, &f).unwrap();
        assert_eq!(get(&c, "prj", "web", "1.0.0").unwrap(), Some(f));
        forget(&c, "prj", "web", "1.0.0").unwrap();
        assert_eq!(get(&c, "prj", "web", "1.0.0").unwrap(), None);
        forget(&c, "prj", "web", "1.0.0").unwrap();
    }
}
