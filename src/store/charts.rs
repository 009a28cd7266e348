//! Charts: what wharf learned about classic (ChartMuseum) chart versions from their uploads, so
//! download and delete events can carry the chart's type, appVersion and size, which the
//! request path alone does not show.

use super::db::Db;
use super::{StoreError, now_ms};
use crate::args;

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
pub fn remember(db: &Db<'_>, c: &ChartFacts) -> Result<(), StoreError> {
    write(
        db,
        c,
        "ON CONFLICT (project, name, version) DO UPDATE SET type = excluded.type,
           app_version = excluded.app_version, size = excluded.size,
           updated_at = excluded.updated_at",
    )
}

/// Insert the facts of a chart version unless some are known: what a download learned from
/// ChartMuseum never replaces what an upload through wharf committed meanwhile.
pub fn remember_if_unknown(db: &Db<'_>, c: &ChartFacts) -> Result<(), StoreError> {
    write(db, c, "ON CONFLICT (project, name, version) DO NOTHING")
}

fn write(db: &Db<'_>, c: &ChartFacts, on_conflict: &str) -> Result<(), StoreError> {
    db.exec(
        &format!(
            "INSERT INTO charts (project, name, version, type, app_version, size, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) {on_conflict}"
        ),
        args![
            &c.project,
            &c.name,
            &c.version,
            &c.chart_type,
            c.app_version.as_deref(),
            c.size.map(super::knowledge::clamp_size),
            now_ms(),
        ],
    )?;
    Ok(())
}

/// The facts of `name` `version` in `project`, if known.
pub fn get(
    db: &Db<'_>,
    project: &str,
    name: &str,
    version: &str,
) -> Result<Option<ChartFacts>, StoreError> {
    db.row(
        "SELECT type, app_version, size FROM charts WHERE project = ?1 AND name = ?2 AND version = ?3",
        args![project, name, version],
        |r| {
            Ok(ChartFacts {
                project: project.to_string(),
                name: name.to_string(),
                version: version.to_string(),
                chart_type: r.text(0)?,
                app_version: r.opt_text(1)?,
                size: r.opt_u64(2)?,
            })
        },
    )
}

/// Forget a chart version (it was deleted).
pub fn forget(db: &Db<'_>, project: &str, name: &str, version: &str) -> Result<(), StoreError> {
    db.exec(
        "DELETE FROM charts WHERE project = ?1 AND name = ?2 AND version = ?3",
        args![project, name, version],
    )?;
    Ok(())
}
