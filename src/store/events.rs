//! The event log: every event, held (waiting to see whether an index absorbs it), published
//! (final; its deliveries were created in the same transaction) or cancelled (absorbed).

use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, now_ms};
use crate::events::{Event, EventKind};

thread_local! {
    /// Kinds of the events published by the transaction job running on this thread (drained
    /// by [`take_published`]; the writer clears it before every job).
    static PUBLISHED: std::cell::RefCell<Vec<EventKind>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The kinds of events published on this thread since the last call (for metrics: an event
/// counts when it is published, not when it is held or absorbed).
pub fn take_published() -> Vec<EventKind> {
    PUBLISHED.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

fn note_published(kind: EventKind) {
    PUBLISHED.with(|p| p.borrow_mut().push(kind));
}

/// Record `event`. With `hold_until` (unix ms) it waits, durably, for [`publish_due`] or
/// [`cancel_held`]; otherwise it is published now.
pub fn insert(conn: &Connection, event: &Event, hold_until: Option<i64>) -> Result<(), StoreError> {
    let body = serde_json::to_string(event).map_err(|e| StoreError::Sql(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO events (id, type, project, repository, digest, occurred_at, state, release_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
            event.id.to_string(),
            event.kind.harbor_type(),
            event.project,
            event.repository,
            event.digest,
            event.occurred_at.timestamp_millis(),
            if hold_until.is_some() { "held" } else { "published" },
            hold_until,
            body,
        ])?;
    if hold_until.is_none() {
        super::outbox::fanout(conn, event)?;
        note_published(event.kind);
    }
    Ok(())
}

/// Push back the release of every held event of `repository` to `until` (unix ms): platform
/// manifests of one multi-platform push arrive one after the other, each after its own layers,
/// so the window runs from the last of them.
pub fn extend_held(conn: &Connection, repository: &str, until: i64) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE events SET release_at = ?2 WHERE state = 'held' AND repository = ?1 AND release_at < ?2",
        )?
        .execute(params![repository, until])?)
}

/// Publish held events whose time has come; returns them.
pub fn publish_due(conn: &Connection, now: i64) -> Result<Vec<Event>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT seq, body FROM events WHERE state = 'held' AND release_at <= ?1 ORDER BY release_at, seq LIMIT 1000",
    )?;
    let rows: Vec<(i64, String)> = stmt
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    publish_rows(conn, rows)
}

/// Publish now, whatever their release time, the held events of `repository` about `digest`
/// (it is being deleted: its push must not be published after its delete); returns them.
pub fn publish_held(
    conn: &Connection,
    repository: &str,
    digest: &str,
) -> Result<Vec<Event>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT seq, body FROM events WHERE state = 'held' AND repository = ?1 AND digest = ?2 ORDER BY seq",
    )?;
    let rows: Vec<(i64, String)> = stmt
        .query_map(params![repository, digest], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    publish_rows(conn, rows)
}

fn publish_rows(conn: &Connection, rows: Vec<(i64, String)>) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for (seq, body) in rows {
        conn.prepare_cached("UPDATE events SET state = 'published' WHERE seq = ?1")?
            .execute([seq])?;
        match serde_json::from_str::<Event>(&body) {
            Ok(e) => {
                super::outbox::fanout(conn, &e)?;
                note_published(e.kind);
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
    let mut stmt = conn.prepare_cached("UPDATE events SET state = 'cancelled' WHERE state = 'held' AND repository = ?1 AND digest = ?2",
    )?;
    for d in digests {
        n += stmt.execute(params![repository, d])?;
    }
    Ok(n)
}

/// When the next held event is due (unix ms), if any.
pub fn next_release(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT MIN(release_at) FROM events WHERE state = 'held'")?
        .query_row([], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

/// Remove up to `batch` events that occurred before `before` (unix ms) and are done with:
/// published or cancelled, every delivery finished. Their deliveries and attempts go too.
/// Returns how many events were removed.
pub fn prune(conn: &Connection, before: i64, batch: usize) -> Result<usize, StoreError> {
    let seqs: Vec<(i64, String)> = conn
        .prepare_cached(
            "SELECT seq, id FROM events e WHERE occurred_at < ?1 AND state IN ('published', 'cancelled')
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.state IN ('pending', 'running'))
             ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![before, batch as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut del_attempts = conn.prepare_cached(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id = ?1)",
    )?;
    let mut del_deliveries = conn.prepare_cached("DELETE FROM deliveries WHERE event_id = ?1")?;
    let mut del_event = conn.prepare_cached("DELETE FROM events WHERE seq = ?1")?;
    for (seq, id) in &seqs {
        del_attempts.execute([id])?;
        del_deliveries.execute([id])?;
        del_event.execute([seq])?;
    }
    Ok(seqs.len())
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
        .prepare_cached("SELECT body FROM events WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
}

/// The current time in the unit of `release_at`.
pub fn now() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Repository;
    use crate::store::Store;

    fn push(repo: &str, digest: &str) -> Event {
        let mut e = Event::new(
            EventKind::PushArtifact,
            &Repository::parse(repo).unwrap(),
            "alice",
        );
        e.digest = Some(digest.to_string());
        e
    }

    fn states(c: &Connection) -> Vec<(String, String, String)> {
        let f = EventFilter {
            all_states: true,
            limit: 100,
            ..EventFilter::default()
        };
        let mut v: Vec<_> = list(c, &f)
            .unwrap()
            .into_iter()
            .map(|s| (s.event.repository, s.event.digest.unwrap(), s.state))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn prune_removes_old_finished_events_with_their_deliveries_only() {
        let c = Connection::open_in_memory().unwrap();
        crate::store::migrate(&c).unwrap();
        let day = 86_400_000;
        let mut old = push("prj/a", "sha256:old");
        old.occurred_at = chrono::Utc::now() - chrono::Duration::days(40);
        let mut waiting = push("prj/a", "sha256:waiting");
        waiting.occurred_at = old.occurred_at;
        let fresh = push("prj/a", "sha256:fresh");
        for e in [&old, &waiting, &fresh] {
            insert(&c, e, None).unwrap();
        }
        for (e, state) in [(&old, "dead"), (&waiting, "pending")] {
            c.execute(
                "INSERT INTO deliveries (event_id, event_type, policy_id, project, target_index, target_address, target, state, not_before, created_at, updated_at)
                 VALUES (?1, 'PUSH_ARTIFACT', 1, 'prj', 0, 'http://x/', '{}', ?2, 0, 0, 0)",
                params![e.id.to_string(), state],
            )
            .unwrap();
        }
        c.execute("INSERT INTO attempts (delivery_id, started_at, duration_ms) SELECT id, 0, 1 FROM deliveries", [])
            .unwrap();
        let before = now_ms() - 30 * day;
        assert_eq!(prune(&c, before, 100).unwrap(), 1);
        assert_eq!(prune(&c, before, 100).unwrap(), 0);
        let left: Vec<String> = states(&c).into_iter().map(|(_, d, _)| d).collect();
        assert_eq!(left, vec!["sha256:fresh", "sha256:waiting"]);
        let deliveries: i64 = c
            .query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))
            .unwrap();
        let attempts: i64 = c
            .query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            (deliveries, attempts),
            (1, 1),
            "the pending delivery and its attempt stay"
        );
    }

    #[tokio::test]
    async fn publish_held_publishes_only_that_digest_of_that_repository() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Default::default()).unwrap();
        let far = now() + 3_600_000;
        let got = store
            .write(move |c| {
                insert(c, &push("prj/a", "sha256:1"), Some(far))?;
                insert(c, &push("prj/a", "sha256:2"), Some(far))?;
                insert(c, &push("prj/b", "sha256:1"), Some(far))?;
                let published = publish_held(c, "prj/a", "sha256:1")?;
                Ok((published.len(), states(c)))
            })
            .await
            .unwrap();
        assert_eq!(got.0, 1);
        let s = |r: &str, d: &str, st: &str| (r.to_string(), d.to_string(), st.to_string());
        assert_eq!(
            got.1,
            vec![
                s("prj/a", "sha256:1", "published"),
                s("prj/a", "sha256:2", "held"),
                s("prj/b", "sha256:1", "held"),
            ]
        );
        // nothing left to publish for it; the releaser still has the others
        let again = store
            .write(|c| {
                Ok((
                    publish_held(c, "prj/a", "sha256:1")?.len(),
                    next_release(c)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(again, (0, Some(far)));
        store.close().await;
    }
}
