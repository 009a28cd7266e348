//! The event log: every event, held (waiting to see whether an index absorbs it), published
//! (final; its deliveries were created in the same transaction) or cancelled (absorbed).

mod body;

pub use body::{BodyError, Columns, decode};

use super::db::{Backend, Db, Row, Value};
use super::{StoreError, now_ms};
use crate::args;
use crate::events::{Event, EventKind};

/// An event's state in the log: its `state` column holds [`EventState::code`] (since schema
/// 21; the SQL holds the codes as literals, which partial indexes need: held `1`, published
/// `2`, cancelled `3`). `wharf_event_state(state)` gives the name in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    /// Waiting to see whether an index absorbs it.
    Held,
    /// Final; its deliveries were created in the same transaction.
    Published,
    /// Absorbed by an index.
    Cancelled,
}

impl EventState {
    pub const ALL: [EventState; 3] = [
        EventState::Held,
        EventState::Published,
        EventState::Cancelled,
    ];

    /// What the `state` column holds: never changed, never reused.
    pub fn code(self) -> i64 {
        match self {
            EventState::Held => 1,
            EventState::Published => 2,
            EventState::Cancelled => 3,
        }
    }

    /// The name the API shows.
    pub fn name(self) -> &'static str {
        match self {
            EventState::Held => "held",
            EventState::Published => "published",
            EventState::Cancelled => "cancelled",
        }
    }

    pub fn of_code(code: i64) -> Option<EventState> {
        EventState::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// What an event's `type` column holds for `kind` (since schema 21): never changed, never
/// reused. `wharf_event_type(type)` gives Harbor's name in SQL.
pub fn type_code(kind: EventKind) -> i64 {
    match kind {
        EventKind::PushArtifact => 1,
        EventKind::PullArtifact => 2,
        EventKind::DeleteArtifact => 3,
        EventKind::UploadChart => 4,
        EventKind::DownloadChart => 5,
        EventKind::DeleteChart => 6,
        EventKind::ScanningCompleted => 7,
        EventKind::ScanningFailed => 8,
        EventKind::ScanningStopped => 9,
        EventKind::QuotaExceed => 10,
        EventKind::QuotaWarning => 11,
        EventKind::Replication => 12,
        EventKind::TagRetention => 13,
    }
}

/// The kind whose [`type_code`] is `code`.
pub fn kind_of_code(code: i64) -> Option<EventKind> {
    EventKind::ALL.into_iter().find(|k| type_code(*k) == code)
}

/// The columns [`read`] takes, in its order, each with the prefix `$p` (a table alias and its
/// dot, or `""`): a literal, for `concat!` in the statements that read events.
macro_rules! event_columns {
    ($p:literal) => {
        concat!(
            $p,
            "body, ",
            $p,
            "id, ",
            $p,
            "type, ",
            $p,
            "project, ",
            $p,
            "repository, ",
            $p,
            "digest, ",
            $p,
            "occurred_at, (SELECT h.host FROM hosts h WHERE h.id = ",
            $p,
            "host_id)"
        )
    };
}
pub(crate) use event_columns;

/// The columns [`read`] takes, in its order.
pub const COLUMNS: &str = event_columns!("");

/// The event of a row whose columns from `at` on are [`COLUMNS`]; `Ok(None)` when the row has
/// none (an outer join) or it cannot be read (logged).
pub fn read(r: &Row<'_>, at: usize) -> Result<Option<Event>, StoreError> {
    let Some(body) = r.opt_bytes(at)? else {
        return Ok(None);
    };
    // an id or digest not in a form wharf writes makes the event unreadable, not the query
    let (id, digest) = match (r.uuid(at + 1), r.opt_digest(at + 5)) {
        (Ok(id), Ok(digest)) => (id, digest),
        (Err(error), _) | (_, Err(error))
            if matches!(error, StoreError::NotUuid(_) | StoreError::NotDigest(_)) =>
        {
            tracing::error!(%error, "unreadable event in the store");
            return Ok(None);
        }
        (Err(error), _) | (_, Err(error)) => return Err(error),
    };
    let code = r.i64(at + 2)?;
    let Some(kind) = kind_of_code(code) else {
        tracing::error!(event_id = %id, code, "unreadable event in the store: unknown type");
        return Ok(None);
    };
    let (project, repository, host) = (r.text(at + 3)?, r.text(at + 4)?, r.opt_text(at + 7)?);
    let row = Columns {
        id,
        kind,
        project: &project,
        repository: &repository,
        digest: digest.as_deref(),
        occurred_ms: r.i64(at + 6)?,
        host: host.as_deref(),
    };
    let event = decode(&body, row);
    match event {
        Ok(e) => Ok(Some(e)),
        Err(error) => {
            tracing::error!(event_id = %id, %error, "unreadable event in the store");
            Ok(None)
        }
    }
}

/// The event's insert: ?1 id, ?2 type, ?3 project, ?4 repository, ?5 digest, ?6 occurred at,
/// ?7 state, ?8 release at, ?9 body, ?10 host id.
macro_rules! insert_event {
    () => {
        "INSERT INTO events (id, type, project, repository, digest, occurred_at, state, release_at, body, host_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    };
}
pub(crate) use insert_event;

/// [`insert_event!`] as a statement.
pub(crate) const INSERT_EVENT_SQL: &str = insert_event!();

/// Record `event`. With `hold_until` (unix ms) it waits, durably, for [`publish_due`] or
/// [`cancel_held`]; otherwise it is published now (its deliveries are created in this
/// transaction, and the job's [`Db`] notes it as published). On PostgreSQL a published
/// event's insert is sent with its first delivery's, as one statement
/// ([`outbox::fanout`](super::outbox::fanout)).
pub fn insert(db: &Db<'_>, event: &Event, hold_until: Option<i64>) -> Result<(), StoreError> {
    let host = body::host_of(event);
    let host_id = match host {
        Some(h) => host_id(db, h)?,
        None => None,
    };
    let body = body::encode(event, host, host_id.is_some())?;
    let args = args![
        &event.id,
        type_code(event.kind),
        &event.project,
        &event.repository,
        event.digest.as_deref().map_or(Value::Null, Value::Digest),
        event.occurred_at.timestamp_millis(),
        if hold_until.is_some() {
            EventState::Held
        } else {
            EventState::Published
        }
        .code(),
        hold_until,
        Value::Bytes(&body),
        host_id,
    ];
    if hold_until.is_some() {
        return db.exec_later(INSERT_EVENT_SQL, args);
    }
    let unsent = match db.backend() {
        Backend::Postgres => Some(args),
        Backend::Sqlite => {
            db.exec_later(INSERT_EVENT_SQL, args)?;
            None
        }
    };
    super::outbox::fanout(db, event, unsent)?;
    db.note_published(event.kind);
    Ok(())
}

/// Most rows `hosts` takes (by id): a host seen after that, as one longer than
/// [`MAX_HOST_LEN`], stays in its event's body. Hosts come from clients' `Host` headers, and a
/// row of `hosts` is never removed: the bound keeps clients that vary it from growing the table.
const MAX_HOSTS: i64 = 10_000;
/// Longest host kept in `hosts` (a DNS name and a port; PostgreSQL's unique index takes keys
/// of up to about 2.7 kB).
const MAX_HOST_LEN: usize = 300;

/// The id of `host` in `hosts` (schema 22), added if new and there is room ([`MAX_HOSTS`]):
/// from this process's cache when it has seen the row committed, else from the store (the
/// answer is cached after COMMIT). `None`: the host stays in the event's body.
fn host_id(db: &Db<'_>, host: &str) -> Result<Option<i64>, StoreError> {
    if host.len() > MAX_HOST_LEN {
        return Ok(None);
    }
    if let Some(id) = db.cache().and_then(|c| c.host_id(host)) {
        return Ok(Some(id));
    }
    let find = || db.int("SELECT id FROM hosts WHERE host = ?1", args![host]);
    let id = match find()? {
        Some(id) => id,
        None => {
            let last = db.int("SELECT MAX(id) FROM hosts", &[])?.unwrap_or(0);
            if last >= MAX_HOSTS {
                return Ok(None);
            }
            // `DO NOTHING`, then a read: a row another transaction just added is neither
            // rewritten nor locked until COMMIT
            let inserted = db.row(
                "INSERT INTO hosts (host) VALUES (?1) ON CONFLICT (host) DO NOTHING RETURNING id",
                args![host],
                |r| r.i64(0),
            )?;
            match inserted {
                Some(id) => id,
                None => find()?.ok_or(StoreError::Null(0))?,
            }
        }
    };
    db.note_host(host, id);
    Ok(Some(id))
}

/// Push back the release of every held event of `repository` to `until` (unix ms): platform
/// manifests of one multi-platform push arrive one after the other, each after its own layers,
/// so the window runs from the last of them.
pub fn extend_held(db: &Db<'_>, repository: &str, until: i64) -> Result<u64, StoreError> {
    db.exec(
        "UPDATE events SET release_at = ?2 WHERE state = 1 AND repository = ?1 AND release_at < ?2",
        args![repository, until],
    )
}

/// Publish held events whose time has come; returns them. Several replicas may run this at
/// once: on PostgreSQL each takes rows the others have not locked, and an event is published
/// by exactly one of them.
pub fn publish_due(db: &Db<'_>, now: i64) -> Result<Vec<Event>, StoreError> {
    let sql = match db.backend() {
        Backend::Sqlite => {
            concat!(
                "SELECT seq, ",
                event_columns!(""),
                " FROM events WHERE state = 1 AND release_at <= ?1 ORDER BY release_at, seq LIMIT 1000"
            )
        }
        Backend::Postgres => {
            concat!(
                "SELECT seq, ",
                event_columns!(""),
                " FROM events WHERE state = 1 AND release_at <= ?1 ORDER BY release_at, seq LIMIT 1000 FOR UPDATE SKIP LOCKED"
            )
        }
    };
    let rows = db.rows(sql, args![now], |r| Ok((r.i64(0)?, read(r, 1)?)))?;
    publish_rows(db, rows)
}

/// Publish now, whatever their release time, the held events of `repository` about `digest`
/// (it is being deleted: its push must not be published after its delete); returns them.
pub fn publish_held(db: &Db<'_>, repository: &str, digest: &str) -> Result<Vec<Event>, StoreError> {
    let rows = db.rows(
        concat!(
            "SELECT seq, ",
            event_columns!(""),
            " FROM events WHERE state = 1 AND repository = ?1 AND digest = ?2 ORDER BY seq"
        ),
        &[Value::Text(repository), Value::Digest(digest)],
        |r| Ok((r.i64(0)?, read(r, 1)?)),
    )?;
    publish_rows(db, rows)
}

fn publish_rows(db: &Db<'_>, rows: Vec<(i64, Option<Event>)>) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for (seq, event) in rows {
        // only if still held: another transaction may have published or absorbed it meanwhile
        let changed = db.exec(
            "UPDATE events SET state = 2 WHERE seq = ?1 AND state = 1",
            args![seq],
        )?;
        if changed != 1 {
            continue;
        }
        match event {
            Some(e) => {
                super::outbox::fanout(db, &e, None)?;
                db.note_published(e.kind);
                out.push(e);
            }
            None => tracing::error!(seq, "unreadable held event skipped"),
        }
    }
    Ok(out)
}

/// Cancel the held events of `repository` about any of `digests` (absorbed by an index).
pub fn cancel_held(db: &Db<'_>, repository: &str, digests: &[String]) -> Result<u64, StoreError> {
    let mut n = 0;
    for d in digests {
        n += db.exec(
            "UPDATE events SET state = 3 WHERE state = 1 AND repository = ?1 AND digest = ?2",
            &[Value::Text(repository), Value::Digest(d)],
        )?;
    }
    Ok(n)
}

/// When the next held event is due (unix ms), if any.
pub fn next_release(db: &Db<'_>) -> Result<Option<i64>, StoreError> {
    db.int("SELECT MIN(release_at) FROM events WHERE state = 1", &[])
}

/// Remove up to `batch` events that occurred before `before` (unix ms) and are done with:
/// published or cancelled, every delivery finished. Their deliveries and attempts go too.
/// Returns how many events were removed.
pub fn prune(db: &Db<'_>, before: i64, batch: usize) -> Result<usize, StoreError> {
    prune_of(db, before, batch, false)
}

/// [`prune`] for pull events only (`PULL_ARTIFACT`, `DOWNLOAD_CHART`: `store.retention_pulls`).
pub fn prune_pulls(db: &Db<'_>, before: i64, batch: usize) -> Result<usize, StoreError> {
    prune_of(db, before, batch, true)
}

fn prune_of(db: &Db<'_>, before: i64, batch: usize, pulls_only: bool) -> Result<usize, StoreError> {
    let old: Vec<i64> = db.rows(
        "SELECT seq FROM events e WHERE occurred_at < ?1 AND state IN (2, 3)
         AND (?3 = 0 OR type IN (?4, ?5))
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state IN ('pending', 'running'))
         ORDER BY seq LIMIT ?2",
        args![
            before,
            batch as i64,
            pulls_only,
            type_code(EventKind::PullArtifact),
            type_code(EventKind::DownloadChart)
        ],
        |r| r.i64(0),
    )?;
    remove(db, &old)
}

/// Remove these events with their finished deliveries and their attempts; how many. Each
/// statement checks again what the selection found: a delivery redelivered since (pending
/// again, perhaps claimed already; on PostgreSQL its uncommitted change is waited for) stays,
/// with its attempts and its event.
fn remove(db: &Db<'_>, old: &[i64]) -> Result<usize, StoreError> {
    let mut removed = 0;
    for seq in old {
        let gone = db.rows(
            "DELETE FROM deliveries WHERE event_seq = ?1 AND state IN ('succeeded', 'dead')
             RETURNING id",
            args![*seq],
            |r| r.i64(0),
        )?;
        for id in gone {
            db.exec_later("DELETE FROM attempts WHERE delivery_id = ?1", args![id])?;
        }
        removed += db.exec(
            "DELETE FROM events WHERE seq = ?1
             AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_seq = ?1)",
            args![*seq],
        )?;
    }
    Ok(usize::try_from(removed).unwrap_or(usize::MAX))
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
pub fn list(db: &Db<'_>, f: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
    // only the filters that are set, so the planner can use events_by_project
    let mut sql = format!("SELECT state, {COLUMNS} FROM events WHERE 1=1");
    let mut args: Vec<Value<'_>> = Vec::new();
    for (column, value) in [
        ("project", f.project.as_deref().map(Value::Text)),
        ("type", f.kind.map(|k| Value::Int(type_code(k)))),
        ("repository", f.repository.as_deref().map(Value::Text)),
    ] {
        if let Some(v) = value {
            args.push(v);
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    }
    if !f.all_states {
        sql.push_str(" AND state = 2");
    }
    args.push(Value::Int(f.limit.clamp(1, 10_000) as i64));
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", args.len()));
    let rows = db.rows(&sql, &args, stored_row)?;
    Ok(rows.into_iter().flatten().collect())
}

/// A filtered, ordered page of the event log: `filter` is `AND …` conditions on the columns of
/// `events` (parameters from `?1`), `order` an `ORDER BY` list (default: newest first);
/// `all_states` includes held and cancelled events. Returns the page and the number of
/// matches.
pub fn page(
    db: &Db<'_>,
    filter: &str,
    args: &[super::db::Value<'_>],
    all_states: bool,
    order: Option<&str>,
    (offset, limit): (i64, i64),
) -> Result<(Vec<StoredEvent>, u64), StoreError> {
    let states = if all_states { "" } else { " AND state = 2" };
    let total = db
        .int(
            &format!("SELECT COUNT(*) FROM events WHERE 1=1{states}{filter}"),
            args,
        )?
        .unwrap_or(0)
        .max(0) as u64;
    let mut all: Vec<Value<'_>> = args.to_vec();
    let n = all.len();
    all.push(Value::Int(limit));
    all.push(Value::Int(offset));
    let order = order.unwrap_or("seq DESC");
    let sql = format!(
        "SELECT state, {COLUMNS} FROM events WHERE 1=1{states}{filter} ORDER BY {order}, seq DESC LIMIT ?{} OFFSET ?{}",
        n + 1,
        n + 2
    );
    let rows = db.rows(&sql, &all, stored_row)?;
    Ok((rows.into_iter().flatten().collect(), total))
}

/// A row of `state, COLUMNS` (an unreadable event: `None`).
fn stored_row(r: &Row<'_>) -> Result<Option<StoredEvent>, StoreError> {
    let code = r.i64(0)?;
    let state = EventState::of_code(code).map_or_else(|| code.to_string(), |s| s.name().into());
    Ok(read(r, 1)?.map(|event| StoredEvent { event, state }))
}

/// One event by id (none when `id` is not a UUID).
pub fn get(db: &Db<'_>, id: &str) -> Result<Option<Event>, StoreError> {
    let Ok(id) = uuid::Uuid::try_parse(id) else {
        return Ok(None);
    };
    let rows = db.rows(
        &format!("SELECT {COLUMNS} FROM events WHERE id = ?1"),
        args![&id],
        |r| read(r, 0),
    )?;
    Ok(rows.into_iter().flatten().next())
}

/// Is the event `id` recorded?
pub fn exists(db: &Db<'_>, id: &uuid::Uuid) -> Result<bool, StoreError> {
    Ok(db
        .int("SELECT 1 FROM events WHERE id = ?1", args![id])?
        .is_some())
}

/// The current time in the unit of `release_at`.
pub fn now() -> i64 {
    now_ms()
}
