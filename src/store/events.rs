//! The event log: every event, held (waiting to see whether an index absorbs it), published
//! (final; its deliveries were created in the same transaction) or cancelled (absorbed).

use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, now_ms};
use crate::events::{Event, EventKind};

/// Record `event`. With `hold_until` (unix ms) it waits, durably, for [`publish_due`] or
/// [`cancel_held`]; otherwise it is published now.
pub fn insert(conn: &Connection, event: &Event, hold_until: Option<i64>) -> Result<(), StoreError> {
    let body = serde_json::to_string(event).map_err(|e| StoreError::Sql(e.to_string()))?;
    conn.execute(
        "INSERT INTO events (id, type, project, repository, digest, occurred_at, state, release_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            event.id.to_string(),
            event.kind.harbor_type(),
            event.project,
            event.repository,
            event.digest,
            event.occurred_at.timestamp_millis(),
            if hold_until.is_some() { "held" } else { "published" },
            hold_until,
            body,
        ],
    )?;
    if hold_until.is_none() {
        super::outbox::fanout(conn, event)?;
    }
    Ok(())
}

/// Publish held events whose time has come; returns them.
pub fn publish_due(conn: &Connection, now: i64) -> Result<Vec<Event>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT seq, body FROM events WHERE state = 'held' AND release_at <= ?1 ORDER BY seq LIMIT 1000",
    )?;
    let rows: Vec<(i64, String)> = stmt
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (seq, body) in rows {
        conn.execute(
            "UPDATE events SET state = 'published' WHERE seq = ?1",
            [seq],
        )?;
        match serde_json::from_str::<Event>(&body) {
            Ok(e) => {
                super::outbox::fanout(conn, &e)?;
                out.push(e);
            }
            Err(err) => tracing::error!(seq, error = %err, "unreadable held event skipped"),
        }
    }
    Ok(out)
}

/// Cancel the held events of `repository` about any of `digests` (absorbed by an index).
pub fn cancel_held(
    conn: &Connection,
    repository: &str,
    digests: &[String],
) -> Result<usize, StoreError> {
    let mut n = 0;
    let mut stmt = conn.prepare(
        "UPDATE events SET state = 'cancelled' WHERE state = 'held' AND repository = ?1 AND digest = ?2",
    )?;
    for d in digests {
        n += stmt.execute(params![repository, d])?;
    }
    Ok(n)
}

/// When the next held event is due (unix ms), if any.
pub fn next_release(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT MIN(release_at) FROM events WHERE state = 'held'",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten())
}

/// What to list.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub project: Option<String>,
    pub kind: Option<EventKind>,
    pub repository: Option<String>,
    /// Include held and cancelled events too.
    pub all_states: bool,
    pub limit: usize,
}

/// A stored event with its state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredEvent {
    #[serde(flatten)]
    pub event: Event,
    pub state: String,
}

/// Events, newest first.
pub fn list(conn: &Connection, f: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
    let mut sql = String::from("SELECT body, state FROM events WHERE 1=1");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(p) = &f.project {
        sql.push_str(" AND project = ?");
        args.push(Box::new(p.clone()));
    }
    if let Some(k) = f.kind {
        sql.push_str(" AND type = ?");
        args.push(Box::new(k.harbor_type()));
    }
    if let Some(r) = &f.repository {
        sql.push_str(" AND repository = ?");
        args.push(Box::new(r.clone()));
    }
    if !f.all_states {
        sql.push_str(" AND state = 'published'");
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push(Box::new(f.limit.clamp(1, 10_000) as i64));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(
        rusqlite::params_from_iter(args.iter().map(|a| a.as_ref())),
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (body, state) = row?;
        if let Ok(event) = serde_json::from_str(&body) {
            out.push(StoredEvent { event, state });
        }
    }
    Ok(out)
}

/// One event by id.
pub fn get(conn: &Connection, id: &str) -> Result<Option<Event>, StoreError> {
    let body: Option<String> = conn
        .query_row("SELECT body FROM events WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
}

/// The current time in the unit of `release_at`.
pub fn now() -> i64 {
    now_ms()
}
