//! Policies, projects (ids for Harbor's `project_id`), target versions and system settings.
//!
//! Each target of a policy is stored once per version in `delivery_targets` (its address, auth
//! header and signing secret as the policy had them); deliveries point at the version they
//! were created for. A version stops being current when the policy's target changes, and is
//! dropped as soon as no pending or running delivery needs it (at the policy change, else by
//! the hourly pruner), so old auth headers and secrets do not linger in the database.

use std::sync::Arc;

use super::db::{Db, json};
use super::{StoreError, now_ms};
use crate::args;
use crate::dispatch::policy::{Filters, Policy, Target};
use crate::events::EventKind;

const COLUMNS: &str = "p.id, p.project, COALESCE(pr.id, 0), p.name, p.description, p.enabled, p.event_types, p.targets, p.filters, p.creator, p.created_at, p.updated_at";

fn row(r: &super::db::Row<'_>) -> Result<Policy, StoreError> {
    let event_types: Vec<String> = serde_json::from_str(&r.text(6)?).unwrap_or_default();
    Ok(Policy {
        id: r.i64(0)?,
        project: r.text(1)?,
        project_id: r.i64(2)?,
        name: r.text(3)?,
        description: r.text(4)?,
        enabled: r.i64(5)? != 0,
        event_types: event_types
            .iter()
            .filter_map(|t| EventKind::from_harbor(t))
            .collect(),
        targets: serde_json::from_str::<Vec<Target>>(&r.text(7)?).unwrap_or_default(),
        filters: serde_json::from_str::<Filters>(&r.text(8)?).unwrap_or_default(),
        creator: r.text(9)?,
        created_at: r.i64(10)?,
        updated_at: r.i64(11)?,
    })
}

/// The id of project `name`, creating it when new (ids are assigned once, by the store, and
/// never change).
pub fn ensure_project(db: &Db<'_>, name: &str) -> Result<i64, StoreError> {
    db.exec(
        "INSERT INTO projects (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        args![name, now_ms()],
    )?;
    project_id(db, name)?.ok_or(StoreError::Closed)
}

/// The id of project `name`, if it has one.
pub fn project_id(db: &Db<'_>, name: &str) -> Result<Option<i64>, StoreError> {
    db.int("SELECT id FROM projects WHERE name = ?1", args![name])
}

/// The name of project `id`.
pub fn project_name(db: &Db<'_>, id: i64) -> Result<Option<String>, StoreError> {
    db.text("SELECT name FROM projects WHERE id = ?1", args![id])
}

/// A policy as fan-out uses it: with the ids of its current target versions.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub policy: Policy,
    /// `delivery_targets.id` of each target, by position.
    pub target_ids: Vec<Option<i64>>,
}

/// The policies of `project` for fan-out (through the process's cache, when the job has it).
pub fn for_fanout(db: &Db<'_>, project: &str) -> Result<Arc<Vec<Fanout>>, StoreError> {
    let cache = db.cache();
    if let Some(hit) = cache.and_then(|c| c.policies(project)) {
        return Ok(hit);
    }
    let generation = cache.map(|c| c.loading());
    let mut out = Vec::new();
    for policy in list(db, project)? {
        let mut target_ids = vec![None; policy.targets.len()];
        for (pos, id) in db.rows(
            "SELECT position, id FROM delivery_targets WHERE policy_id = ?1 AND current = 1",
            args![policy.id],
            |r| Ok((r.i64(0)?, r.i64(1)?)),
        )? {
            if let Some(slot) = usize::try_from(pos)
                .ok()
                .and_then(|p| target_ids.get_mut(p))
            {
                *slot = Some(id);
            }
        }
        out.push(Fanout { policy, target_ids });
    }
    let list = Arc::new(out);
    if let (Some(c), Some(g)) = (cache, generation) {
        c.put_policies(g, project, list.clone());
    }
    Ok(list)
}

/// `notification_enable` for fan-out (through the process's cache, when the job has it).
pub fn notification_enabled_cached(db: &Db<'_>) -> Result<bool, StoreError> {
    let cache = db.cache();
    if let Some(v) = cache.and_then(|c| c.notification_enabled()) {
        return Ok(v);
    }
    let generation = cache.map(|c| c.loading());
    let v = notification_enabled(db)?;
    if let (Some(c), Some(g)) = (cache, generation) {
        c.put_notification_enabled(g, v);
    }
    Ok(v)
}

/// Policies of a project, by id.
pub fn list(db: &Db<'_>, project: &str) -> Result<Vec<Policy>, StoreError> {
    db.rows(
        &format!("SELECT {COLUMNS} FROM policies p LEFT JOIN projects pr ON pr.name = p.project WHERE p.project = ?1 ORDER BY p.id"),
        args![project],
        row,
    )
}

/// A policy by id, whatever its project (internal use only: the API always checks the project).
pub fn get_by_id(db: &Db<'_>, id: i64) -> Result<Option<Policy>, StoreError> {
    db.row(
        &format!("SELECT {COLUMNS} FROM policies p LEFT JOIN projects pr ON pr.name = p.project WHERE p.id = ?1"),
        args![id],
        row,
    )
}

/// A policy of `project` by id (another project's policy is not found: no IDOR).
pub fn get(db: &Db<'_>, project: &str, id: i64) -> Result<Option<Policy>, StoreError> {
    Ok(get_by_id(db, id)?.filter(|p| p.project == project))
}

/// Is a policy name taken in the project (by another policy than `except`)? Asked under the
/// lock every policy change takes ([`Db::note_policies`]), so the answer holds until this
/// transaction's insert or rename: two creations of one name at once, through two replicas,
/// make one policy and one `409` (the second failed on the unique index: a `500`).
pub fn name_taken(
    db: &Db<'_>,
    project: &str,
    name: &str,
    except: Option<i64>,
) -> Result<bool, StoreError> {
    db.note_policies()?;
    let n = db
        .int(
            "SELECT COUNT(*) FROM policies WHERE project = ?1 AND name = ?2 AND id != ?3",
            args![project, name, except.unwrap_or(-1)],
        )?
        .unwrap_or(0);
    Ok(n > 0)
}

fn types_json(p: &Policy) -> Result<String, StoreError> {
    let types: Vec<&str> = p.event_types.iter().map(|k| k.harbor_type()).collect();
    json(&types)
}

/// Insert a new policy; returns its id.
pub fn insert(db: &Db<'_>, p: &Policy) -> Result<i64, StoreError> {
    db.note_policies()?;
    ensure_project(db, &p.project)?;
    let now = now_ms();
    let (types, targets, filters) = (types_json(p)?, json(&p.targets)?, json(&p.filters)?);
    let id = db
        .int(
            "INSERT INTO policies (project, name, description, enabled, event_types, targets, filters, creator, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) RETURNING id",
            args![&p.project, &p.name, &p.description, p.enabled, &types, &targets, &filters, &p.creator, now],
        )?
        .ok_or(StoreError::Closed)?;
    set_target_versions(db, id, &p.targets)?;
    Ok(id)
}

/// Replace a policy's editable fields.
pub fn update(db: &Db<'_>, p: &Policy) -> Result<bool, StoreError> {
    db.note_policies()?;
    let (types, targets, filters) = (types_json(p)?, json(&p.targets)?, json(&p.filters)?);
    let n = db.exec(
        "UPDATE policies SET name = ?2, description = ?3, enabled = ?4, event_types = ?5, targets = ?6, filters = ?7, updated_at = ?8
         WHERE id = ?1 AND project = ?9",
        args![p.id, &p.name, &p.description, p.enabled, &types, &targets, &filters, now_ms(), &p.project],
    )?;
    if n == 1 {
        set_target_versions(db, p.id, &p.targets)?;
    }
    Ok(n == 1)
}

/// Replace a policy's targets only (e.g. one disabled after 410 Gone).
pub fn update_targets(db: &Db<'_>, id: i64, targets: &[Target]) -> Result<(), StoreError> {
    db.note_policies()?;
    db.exec(
        "UPDATE policies SET targets = ?2, updated_at = ?3 WHERE id = ?1",
        args![id, &json(&targets)?, now_ms()],
    )?;
    set_target_versions(db, id, targets)
}

/// Make `targets` the current target versions of policy `id`: an unchanged target keeps its
/// version, a changed one gets a new version; versions no longer current are dropped when no
/// pending or running delivery needs them.
pub fn set_target_versions(db: &Db<'_>, id: i64, targets: &[Target]) -> Result<(), StoreError> {
    let current: Vec<(i64, i64, String)> = db.rows(
        "SELECT id, position, body FROM delivery_targets WHERE policy_id = ?1 AND current = 1",
        args![id],
        |r| Ok((r.i64(0)?, r.i64(1)?, r.text(2)?)),
    )?;
    let now = now_ms();
    for (pos, t) in targets.iter().enumerate() {
        let body = json(t)?;
        let pos = pos as i64;
        if current.iter().any(|(_, p, b)| *p == pos && *b == body) {
            continue;
        }
        db.exec(
            "UPDATE delivery_targets SET current = 0 WHERE policy_id = ?1 AND position = ?2 AND current = 1",
            args![id, pos],
        )?;
        db.exec(
            "INSERT INTO delivery_targets (policy_id, position, address, body, current, created_at)
             VALUES (?1, ?2, ?3, ?4, 1, ?5)",
            args![id, pos, &t.address, &body, now],
        )?;
    }
    db.exec(
        "UPDATE delivery_targets SET current = 0 WHERE policy_id = ?1 AND position >= ?2 AND current = 1",
        args![id, targets.len() as i64],
    )?;
    drop_unused_targets(db, Some(id))
}

/// Drop target versions that are not current and that no pending or running delivery needs
/// (of one policy, or of all).
pub fn drop_unused_targets(db: &Db<'_>, policy: Option<i64>) -> Result<(), StoreError> {
    db.exec(
        "DELETE FROM delivery_targets WHERE current = 0 AND (CAST(?1 AS BIGINT) IS NULL OR policy_id = ?1)
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.target_id = delivery_targets.id
                         AND d.state IN ('pending', 'running'))",
        args![policy],
    )?;
    Ok(())
}

/// Migration step: give every policy its current target versions.
pub fn create_target_versions(db: &Db<'_>) -> Result<(), StoreError> {
    let all: Vec<(i64, String)> = db.rows("SELECT id, targets FROM policies", &[], |r| {
        Ok((r.i64(0)?, r.text(1)?))
    })?;
    for (id, targets) in all {
        let targets: Vec<Target> = serde_json::from_str(&targets).unwrap_or_default();
        set_target_versions(db, id, &targets)?;
    }
    Ok(())
}

/// Delete a policy; its open deliveries end (dead, "policy deleted").
pub fn delete(db: &Db<'_>, project: &str, id: i64) -> Result<bool, StoreError> {
    db.note_policies()?;
    let n = db.exec(
        "DELETE FROM policies WHERE id = ?1 AND project = ?2",
        args![id, project],
    )?;
    if n == 1 {
        db.exec(
            "UPDATE deliveries SET state = 'dead', last_error = 'policy deleted', updated_at = ?2
             WHERE policy_id = ?1 AND state IN ('pending', 'running')",
            args![id, now_ms()],
        )?;
        db.exec("DELETE FROM last_triggers WHERE policy_id = ?1", args![id])?;
        set_target_versions(db, id, &[])?;
    }
    Ok(n == 1)
}

/// Last trigger time (unix ms) per policy and event type of a project.
pub fn last_triggers(db: &Db<'_>, project: &str) -> Result<Vec<(i64, String, i64)>, StoreError> {
    db.rows(
        "SELECT t.policy_id, t.event_type, t.at FROM last_triggers t JOIN policies p ON p.id = t.policy_id WHERE p.project = ?1",
        args![project],
        |r| Ok((r.i64(0)?, r.text(1)?, r.i64(2)?)),
    )
}

const NOTIFICATION_ENABLE: &str = "notification_enable";

/// The system switch `notification_enable` (default on).
pub fn notification_enabled(db: &Db<'_>) -> Result<bool, StoreError> {
    let v = db.text(
        "SELECT value FROM settings WHERE key = ?1",
        args![NOTIFICATION_ENABLE],
    )?;
    Ok(v.as_deref() != Some("false"))
}

/// Switch notifications on or off for every project. Returns the policy version the change
/// made.
pub fn set_notification_enabled(db: &Db<'_>, on: bool) -> Result<i64, StoreError> {
    let version = db.note_policies()?;
    db.exec(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        args![NOTIFICATION_ENABLE, if on { "true" } else { "false" }],
    )?;
    Ok(version)
}

/// The policy version and whether notifications are on, read together (one statement: one
/// snapshot), so that the switch is known as of its version.
pub fn notification_enabled_at(db: &Db<'_>) -> Result<(i64, bool), StoreError> {
    Ok(db
        .row(
            "SELECT COALESCE((SELECT n FROM meta WHERE key = 'policy_version'), 0),
                    (SELECT value FROM settings WHERE key = ?1)",
            args![NOTIFICATION_ENABLE],
            |r| Ok((r.i64(0)?, r.opt_text(1)?.as_deref() != Some("false"))),
        )?
        .unwrap_or((0, true)))
}
