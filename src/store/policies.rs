//! Policies, projects (ids for Harbor's `project_id`) and system settings.

use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, now_ms};
use crate::dispatch::policy::{Filters, Policy, Target};
use crate::events::EventKind;

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Sql(e.to_string()))
}

const COLUMNS: &str = "p.id, p.project, COALESCE(pr.id, 0), p.name, p.description, p.enabled, p.event_types, p.targets, p.filters, p.creator, p.created_at, p.updated_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Policy> {
    let types: String = r.get(6)?;
    let targets: String = r.get(7)?;
    let filters: String = r.get(8)?;
    let event_types: Vec<String> = serde_json::from_str(&types).unwrap_or_default();
    Ok(Policy {
        id: r.get(0)?,
        project: r.get(1)?,
        project_id: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        enabled: r.get::<_, i64>(5)? != 0,
        event_types: event_types
            .iter()
            .filter_map(|t| EventKind::from_harbor(t))
            .collect(),
        targets: serde_json::from_str::<Vec<Target>>(&targets).unwrap_or_default(),
        filters: serde_json::from_str::<Filters>(&filters).unwrap_or_default(),
        creator: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
    })
}

/// The id of project `name`, creating it when new.
pub fn ensure_project(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO projects (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
    )?
    .execute(params![name, now_ms()])?;
    Ok(conn
        .prepare_cached("SELECT id FROM projects WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

/// The id of project `name`, if it has one.
pub fn project_id(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id FROM projects WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

/// The name of project `id`.
pub fn project_name(conn: &Connection, id: i64) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT name FROM projects WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

thread_local! {
    /// What fan-out reads for every event, cached on the thread that writes (the database
    /// writer thread does all policy writes too, and each of them clears this cache; a job that
    /// rolls back only costs a reload).
    static CACHE: std::cell::RefCell<Cache> = std::cell::RefCell::new(Cache::default());
}

#[derive(Default)]
struct Cache {
    notification_enabled: Option<bool>,
    by_project: std::collections::HashMap<String, std::rc::Rc<Vec<Policy>>>,
}

fn invalidate_cache() {
    CACHE.with(|c| *c.borrow_mut() = Cache::default());
}

/// The policies of `project` for fan-out (cached, see [`CACHE`]).
pub fn for_fanout(
    conn: &Connection,
    project: &str,
) -> Result<std::rc::Rc<Vec<Policy>>, StoreError> {
    if let Some(hit) = CACHE.with(|c| c.borrow().by_project.get(project).cloned()) {
        return Ok(hit);
    }
    let list = std::rc::Rc::new(list(conn, project)?);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.by_project.len() > 10_000 {
            c.by_project.clear();
        }
        c.by_project.insert(project.to_string(), list.clone());
    });
    Ok(list)
}

/// `notification_enable` for fan-out (cached, see [`CACHE`]).
pub fn notification_enabled_cached(conn: &Connection) -> Result<bool, StoreError> {
    if let Some(v) = CACHE.with(|c| c.borrow().notification_enabled) {
        return Ok(v);
    }
    let v = notification_enabled(conn)?;
    CACHE.with(|c| c.borrow_mut().notification_enabled = Some(v));
    Ok(v)
}

/// Policies of a project, by id.
pub fn list(conn: &Connection, project: &str) -> Result<Vec<Policy>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM policies p LEFT JOIN projects pr ON pr.name = p.project WHERE p.project = ?1 ORDER BY p.id"
    ))?;
    let rows = stmt
        .query_map([project], row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A policy by id, whatever its project (internal use only: the API always checks the project).
pub fn get_by_id(conn: &Connection, id: i64) -> Result<Option<Policy>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM policies p LEFT JOIN projects pr ON pr.name = p.project WHERE p.id = ?1"),
            [id],
            row,
        )
        .optional()?)
}

/// A policy of `project` by id (another project's policy is not found: no IDOR).
pub fn get(conn: &Connection, project: &str, id: i64) -> Result<Option<Policy>, StoreError> {
    Ok(get_by_id(conn, id)?.filter(|p| p.project == project))
}

/// Is a policy name taken in the project (by another policy than `except`)?
pub fn name_taken(
    conn: &Connection,
    project: &str,
    name: &str,
    except: Option<i64>,
) -> Result<bool, StoreError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM policies WHERE project = ?1 AND name = ?2 AND id != ?3",
        )?
        .query_row(params![project, name, except.unwrap_or(-1)], |r| r.get(0))?;
    Ok(n > 0)
}

/// Insert a new policy; returns its id.
pub fn insert(conn: &Connection, p: &Policy) -> Result<i64, StoreError> {
    invalidate_cache();
    ensure_project(conn, &p.project)?;
    let now = now_ms();
    let types: Vec<&str> = p.event_types.iter().map(|k| k.harbor_type()).collect();
    conn.prepare_cached("INSERT INTO policies (project, name, description, enabled, event_types, targets, filters, creator, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)")?.execute(
        params![p.project, p.name, p.description, p.enabled as i64, json(&types)?, json(&p.targets)?, json(&p.filters)?, p.creator, now],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Replace a policy's editable fields.
pub fn update(conn: &Connection, p: &Policy) -> Result<bool, StoreError> {
    invalidate_cache();
    let types: Vec<&str> = p.event_types.iter().map(|k| k.harbor_type()).collect();
    let n = conn.prepare_cached("UPDATE policies SET name = ?2, description = ?3, enabled = ?4, event_types = ?5, targets = ?6, filters = ?7, updated_at = ?8
         WHERE id = ?1 AND project = ?9")?.execute(
        params![p.id, p.name, p.description, p.enabled as i64, json(&types)?, json(&p.targets)?, json(&p.filters)?, now_ms(), p.project],
    )?;
    Ok(n == 1)
}

/// Replace a policy's targets only (e.g. one disabled after 410 Gone).
pub fn update_targets(conn: &Connection, id: i64, targets: &[Target]) -> Result<(), StoreError> {
    invalidate_cache();
    conn.prepare_cached("UPDATE policies SET targets = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, json(&targets)?, now_ms()])?;
    Ok(())
}

/// Delete a policy; its open deliveries end (dead, "policy deleted").
pub fn delete(conn: &Connection, project: &str, id: i64) -> Result<bool, StoreError> {
    invalidate_cache();
    let n = conn
        .prepare_cached("DELETE FROM policies WHERE id = ?1 AND project = ?2")?
        .execute(params![id, project])?;
    if n == 1 {
        conn.prepare_cached(
            "UPDATE deliveries SET state = 'dead', last_error = 'policy deleted', updated_at = ?2
             WHERE policy_id = ?1 AND state IN ('pending', 'running')",
        )?
        .execute(params![id, now_ms()])?;
        conn.prepare_cached("DELETE FROM last_triggers WHERE policy_id = ?1")?
            .execute([id])?;
    }
    Ok(n == 1)
}

/// Last trigger time (unix ms) per policy and event type of a project.
pub fn last_triggers(
    conn: &Connection,
    project: &str,
) -> Result<Vec<(i64, String, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT t.policy_id, t.event_type, t.at FROM last_triggers t JOIN policies p ON p.id = t.policy_id WHERE p.project = ?1",
    )?;
    let rows = stmt
        .query_map([project], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

const NOTIFICATION_ENABLE: &str = "notification_enable";

/// The system switch `notification_enable` (default on).
pub fn notification_enabled(conn: &Connection) -> Result<bool, StoreError> {
    let v: Option<String> = conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([NOTIFICATION_ENABLE], |r| r.get(0))
        .optional()?;
    Ok(v.as_deref() != Some("false"))
}

/// Switch notifications on or off for every project.
pub fn set_notification_enabled(conn: &Connection, on: bool) -> Result<(), StoreError> {
    invalidate_cache();
    conn.prepare_cached("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")?.execute(
        params![NOTIFICATION_ENABLE, if on { "true" } else { "false" }],
    )?;
    Ok(())
}
