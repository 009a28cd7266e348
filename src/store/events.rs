//! The event log: every event, held (waiting to see whether an index absorbs it), published
//! (final; its deliveries were created in the same transaction) or cancelled (absorbed).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::db::{Backend, Db, Row, Value, json};
use super::{StoreError, now_ms};
use crate::args;
use crate::events::{ChartInfo, Event, EventKind, QuotaInfo, ScanInfo};

/// What the `body` column holds: the event without the fields that are columns of the row
/// (`id`, `type`, `project`, `repository`, `digest`), which [`decode`] puts back, under keys of
/// one or two letters, the common manifest media types as a code ([`MEDIA_TYPE_CODES`]),
/// without `public` when false, and with the resource URL cut to its host
/// when the rest follows from the row (`<host>/<repository>:<first tag>`, or `…@<digest>`).
/// Since schema 14 the time is the row's `occurred_at` (unix ms) and, in the body, only its
/// nanoseconds below the millisecond, and a request id that is a canonical UUID is kept as its
/// 16 bytes in base64url. A pull event's body is about 130 bytes instead of about 300 (and 500
/// with every field).
///
/// Rows written by earlier wharfs still read: bodies that start with `{"id":` hold the whole
/// event, and [`StoredBody`] takes the long keys as well as the short ones.
#[derive(Serialize)]
struct Body<'a> {
    /// The time whole, only when the row's `occurred_at` (unix ms) and [`Body::sub_ms`] do not
    /// give it back exactly.
    #[serde(rename = "t", skip_serializing_if = "Option::is_none")]
    occurred_at: Option<&'a DateTime<Utc>>,
    /// The nanoseconds of the time below the row's milliseconds (`occurred_at`), when not 0.
    #[serde(rename = "n", skip_serializing_if = "is_zero")]
    sub_ms: u32,
    #[serde(rename = "o")]
    operator: &'a str,
    #[serde(rename = "p", skip_serializing_if = "std::ops::Not::not")]
    public: bool,
    #[serde(rename = "rc", skip_serializing_if = "Option::is_none")]
    repository_created: Option<i64>,
    #[serde(rename = "g", skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    #[serde(rename = "m", skip_serializing_if = "Option::is_none")]
    media_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "z", skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    /// The resource URL whole, when it does not follow from the row.
    #[serde(rename = "u", skip_serializing_if = "Option::is_none")]
    resource_url: Option<&'a str>,
    /// Its host, when the rest follows from the row ([`resource_path`]).
    #[serde(rename = "h", skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(rename = "pl", skip_serializing_if = "<[String]>::is_empty")]
    platforms: &'a [String],
    /// The request id as it came, unless [`Body::request_uuid`] holds it.
    #[serde(rename = "q", skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    /// A request id that is a UUID in its canonical text (as wharf makes them), as its 16
    /// bytes in unpadded base64url: 22 characters instead of 36; empty when it is the event's
    /// own id (a pull's event takes the id wharf made for its request; since schema 17).
    #[serde(rename = "Q", skip_serializing_if = "Option::is_none")]
    request_uuid: Option<String>,
    #[serde(rename = "c", skip_serializing_if = "Option::is_none")]
    client_addr: Option<&'a str>,
    #[serde(rename = "a", skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chart: Option<&'a ChartInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scan: Option<&'a ScanInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<&'a QuotaInfo>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    test: bool,
}

/// Manifest media types stored as a code in [`Body`] (`m`). A code holds no `/` and does not
/// start with `=`; any other media type is stored as it is, or after a `=` when it holds no
/// `/` (a malformed one, as a registry sent it), so none reads back as another.
const MEDIA_TYPE_CODES: [(&str, &str); 4] = [
    ("om", "application/vnd.oci.image.manifest.v1+json"),
    ("oi", "application/vnd.oci.image.index.v1+json"),
    ("dm", "application/vnd.docker.distribution.manifest.v2+json"),
    (
        "dl",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ),
];

/// What [`Body`] stores for a media type (see [`MEDIA_TYPE_CODES`]).
fn media_type_code(media_type: &str) -> std::borrow::Cow<'_, str> {
    if let Some((code, _)) = MEDIA_TYPE_CODES.iter().find(|(_, t)| *t == media_type) {
        return (*code).into();
    }
    if media_type.contains('/') {
        media_type.into()
    } else {
        format!("={media_type}").into()
    }
}

/// A media type from what [`media_type_code`] stored.
fn media_type_of(stored: String) -> String {
    if stored.contains('/') {
        return stored;
    }
    if let Some(raw) = stored.strip_prefix('=') {
        return raw.to_string();
    }
    MEDIA_TYPE_CODES
        .iter()
        .find(|(code, _)| *code == stored)
        .map_or(stored, |(_, t)| t.to_string())
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `t`'s nanoseconds below its millisecond, when `t` is exactly the time of `ms` (unix ms, as
/// the row's `occurred_at` holds it) plus them: what [`Body::sub_ms`] stores.
fn sub_ms_of(t: &DateTime<Utc>) -> Option<u32> {
    let sub = t.timestamp_subsec_nanos() % 1_000_000;
    (time_of(t.timestamp_millis(), sub).as_ref() == Some(t)).then_some(sub)
}

/// The time of `ms` (unix ms) plus `sub` nanoseconds.
fn time_of(ms: i64, sub: u32) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)?
        .checked_add_signed(chrono::TimeDelta::nanoseconds(i64::from(sub)))
}

/// What [`Body::request_uuid`] stores for `id`, when it is a UUID in canonical text.
fn compact_request_id(id: &str) -> Option<String> {
    use base64::Engine as _;
    let u = uuid::Uuid::try_parse(id).ok()?;
    let mut buf = uuid::Uuid::encode_buffer();
    (u.hyphenated().encode_lower(&mut buf) == id)
        .then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(u.as_bytes()))
}

/// A request id from what [`compact_request_id`] stored.
fn request_id_of(stored: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(stored)
        .ok()?;
    Some(
        uuid::Uuid::from_slice(&bytes)
            .ok()?
            .hyphenated()
            .to_string(),
    )
}

/// The part of an OCI resource URL after its host, as [`Event::oci_resource_url`] makes it
/// from the row's repository and digest and the event's first tag.
fn resource_path(repository: &str, tag: Option<&str>, digest: Option<&str>) -> String {
    Event::oci_resource_url("", repository, tag, digest)
}

impl<'a> Body<'a> {
    fn of(e: &'a Event) -> Self {
        // every field named: a field added to `Event` does not compile until it is stored
        let Event {
            id,
            kind: _,
            occurred_at,
            operator,
            project: _,
            repository,
            public,
            repository_created,
            tags,
            digest,
            media_type,
            size,
            resource_url,
            platforms,
            request_id,
            client_addr,
            user_agent,
            chart,
            scan,
            quota,
            test,
        } = e;
        let path = resource_path(
            repository,
            tags.first().map(String::as_str),
            digest.as_deref(),
        );
        let host = resource_url.strip_suffix(path.as_str());
        let sub_ms = sub_ms_of(occurred_at);
        let mut buf = uuid::Uuid::encode_buffer();
        let own_id = id.hyphenated().encode_lower(&mut buf);
        let request_uuid = match request_id.as_deref() {
            Some(r) if r == own_id => Some(String::new()),
            r => r.and_then(compact_request_id),
        };
        Body {
            occurred_at: sub_ms.is_none().then_some(occurred_at),
            sub_ms: sub_ms.unwrap_or(0),
            operator,
            public: *public,
            repository_created: *repository_created,
            tags,
            media_type: media_type.as_deref().map(media_type_code),
            size: *size,
            resource_url: if host.is_some() {
                None
            } else {
                Some(resource_url)
            },
            host,
            platforms,
            request_id: request_id.as_deref().filter(|_| request_uuid.is_none()),
            request_uuid,
            client_addr: client_addr.as_deref(),
            user_agent: user_agent.as_deref(),
            chart: chart.as_ref(),
            scan: scan.as_ref(),
            quota: quota.as_ref(),
            test: *test,
        }
    }
}

/// A stored body read back: the short keys [`Body`] writes, and the long ones of rows written
/// before them.
#[derive(Deserialize)]
struct StoredBody {
    #[serde(rename = "t", alias = "occurred_at", default)]
    occurred_at: Option<DateTime<Utc>>,
    #[serde(rename = "n", default)]
    sub_ms: u32,
    #[serde(rename = "o", alias = "operator")]
    operator: String,
    #[serde(rename = "p", alias = "public", default)]
    public: bool,
    #[serde(rename = "rc", alias = "repository_created", default)]
    repository_created: Option<i64>,
    #[serde(rename = "g", alias = "tags", default)]
    tags: Vec<String>,
    #[serde(rename = "m", alias = "media_type", default)]
    media_type: Option<String>,
    #[serde(rename = "z", alias = "size", default)]
    size: Option<u64>,
    #[serde(rename = "u", alias = "resource_url", default)]
    resource_url: Option<String>,
    #[serde(rename = "h", default)]
    host: Option<String>,
    #[serde(rename = "pl", alias = "platforms", default)]
    platforms: Vec<String>,
    #[serde(rename = "q", alias = "request_id", default)]
    request_id: Option<String>,
    #[serde(rename = "Q", default)]
    request_uuid: Option<String>,
    #[serde(rename = "c", alias = "client_addr", default)]
    client_addr: Option<String>,
    #[serde(rename = "a", alias = "user_agent", default)]
    user_agent: Option<String>,
    #[serde(default)]
    chart: Option<ChartInfo>,
    #[serde(default)]
    scan: Option<ScanInfo>,
    #[serde(default)]
    quota: Option<QuotaInfo>,
    #[serde(default)]
    test: bool,
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
            "occurred_at"
        )
    };
}
pub(crate) use event_columns;

/// The columns [`read`] takes, in its order.
pub const COLUMNS: &str = event_columns!("");

/// The event of a row whose columns from `at` on are [`COLUMNS`]; `Ok(None)` when the row has
/// none (an outer join) or it cannot be read (logged).
pub fn read(r: &Row<'_>, at: usize) -> Result<Option<Event>, StoreError> {
    let Some(body) = r.opt_text(at)? else {
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
    let event = decode(
        &body,
        id,
        &r.text(at + 2)?,
        &r.text(at + 3)?,
        &r.text(at + 4)?,
        digest.as_deref(),
        r.i64(at + 6)?,
    );
    match event {
        Ok(e) => Ok(Some(e)),
        Err(error) => {
            tracing::error!(event_id = %id, %error, "unreadable event in the store");
            Ok(None)
        }
    }
}

/// An event from its stored body and the columns the body leaves out (see [`Body`]);
/// `occurred_ms` is the row's `occurred_at` (unix ms).
pub fn decode(
    body: &str,
    id: uuid::Uuid,
    kind: &str,
    project: &str,
    repository: &str,
    digest: Option<&str>,
    occurred_ms: i64,
) -> Result<Event, serde_json::Error> {
    use serde::de::Error as _;
    if body.starts_with("{\"id\":") {
        return serde_json::from_str(body); // the whole event, as written before
    }
    let b: StoredBody = serde_json::from_str(body)?;
    let kind = EventKind::ALL
        .into_iter()
        .find(|k| k.harbor_type() == kind)
        .ok_or_else(|| serde_json::Error::custom(format!("unknown event type {kind:?}")))?;
    let resource_url = match (b.resource_url, b.host) {
        (Some(url), _) => url,
        (None, Some(host)) => {
            let path = resource_path(repository, b.tags.first().map(String::as_str), digest);
            format!("{host}{path}")
        }
        (None, None) => return Err(serde_json::Error::missing_field("resource_url")),
    };
    let occurred_at = match b.occurred_at {
        Some(t) => t,
        None => time_of(occurred_ms, b.sub_ms).ok_or_else(|| {
            serde_json::Error::custom(format!("occurred_at {occurred_ms} out of range"))
        })?,
    };
    let request_id = match b.request_uuid {
        Some(q) if q.is_empty() => Some(id.hyphenated().to_string()),
        Some(q) => Some(request_id_of(&q).ok_or_else(|| {
            serde_json::Error::custom(format!("request id {q:?} is not a stored UUID"))
        })?),
        None => b.request_id,
    };
    Ok(Event {
        id,
        kind,
        occurred_at,
        operator: b.operator,
        project: project.to_string(),
        repository: repository.to_string(),
        public: b.public,
        repository_created: b.repository_created,
        tags: b.tags,
        digest: digest.map(str::to_string),
        media_type: b.media_type.map(media_type_of),
        size: b.size,
        resource_url,
        platforms: b.platforms,
        request_id,
        client_addr: b.client_addr,
        user_agent: b.user_agent,
        chart: b.chart,
        scan: b.scan,
        quota: b.quota,
        test: b.test,
    })
}

/// Record `event`. With `hold_until` (unix ms) it waits, durably, for [`publish_due`] or
/// [`cancel_held`]; otherwise it is published now (its deliveries are created in this
/// transaction, and the job's [`Db`] notes it as published).
pub fn insert(db: &Db<'_>, event: &Event, hold_until: Option<i64>) -> Result<(), StoreError> {
    let body = json(&Body::of(event))?;
    db.exec_later(
        "INSERT INTO events (id, type, project, repository, digest, occurred_at, state, release_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        args![
            &event.id,
            event.kind.harbor_type(),
            &event.project,
            &event.repository,
            event.digest.as_deref().map_or(Value::Null, Value::Digest),
            event.occurred_at.timestamp_millis(),
            if hold_until.is_some() { "held" } else { "published" },
            hold_until,
            &body,
        ],
    )?;
    if hold_until.is_none() {
        super::outbox::fanout(db, event)?;
        db.note_published(event.kind);
    }
    Ok(())
}

/// Push back the release of every held event of `repository` to `until` (unix ms): platform
/// manifests of one multi-platform push arrive one after the other, each after its own layers,
/// so the window runs from the last of them.
pub fn extend_held(db: &Db<'_>, repository: &str, until: i64) -> Result<u64, StoreError> {
    db.exec(
        "UPDATE events SET release_at = ?2 WHERE state = 'held' AND repository = ?1 AND release_at < ?2",
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
                " FROM events WHERE state = 'held' AND release_at <= ?1 ORDER BY release_at, seq LIMIT 1000"
            )
        }
        Backend::Postgres => {
            concat!(
                "SELECT seq, ",
                event_columns!(""),
                " FROM events WHERE state = 'held' AND release_at <= ?1 ORDER BY release_at, seq LIMIT 1000 FOR UPDATE SKIP LOCKED"
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
            " FROM events WHERE state = 'held' AND repository = ?1 AND digest = ?2 ORDER BY seq"
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
            "UPDATE events SET state = 'published' WHERE seq = ?1 AND state = 'held'",
            args![seq],
        )?;
        if changed != 1 {
            continue;
        }
        match event {
            Some(e) => {
                super::outbox::fanout(db, &e)?;
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
            "UPDATE events SET state = 'cancelled' WHERE state = 'held' AND repository = ?1 AND digest = ?2",
            &[Value::Text(repository), Value::Digest(d)],
        )?;
    }
    Ok(n)
}

/// When the next held event is due (unix ms), if any.
pub fn next_release(db: &Db<'_>) -> Result<Option<i64>, StoreError> {
    db.int(
        "SELECT MIN(release_at) FROM events WHERE state = 'held'",
        &[],
    )
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
        "SELECT seq FROM events e WHERE occurred_at < ?1 AND state IN ('published', 'cancelled')
         AND (?3 = 0 OR type IN (?4, ?5))
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state IN ('pending', 'running'))
         ORDER BY seq LIMIT ?2",
        args![
            before,
            batch as i64,
            pulls_only,
            EventKind::PullArtifact.harbor_type(),
            EventKind::DownloadChart.harbor_type()
        ],
        |r| r.i64(0),
    )?;
    remove(db, &old)
}

/// Remove these events with their deliveries and attempts; how many.
fn remove(db: &Db<'_>, old: &[i64]) -> Result<usize, StoreError> {
    for seq in old {
        db.exec(
            "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_seq = ?1)",
            args![*seq],
        )?;
        db.exec("DELETE FROM deliveries WHERE event_seq = ?1", args![*seq])?;
        db.exec("DELETE FROM events WHERE seq = ?1", args![*seq])?;
    }
    Ok(old.len())
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
        ("project", f.project.as_deref()),
        ("type", f.kind.map(|k| k.harbor_type())),
        ("repository", f.repository.as_deref()),
    ] {
        if let Some(v) = value {
            args.push(Value::Text(v));
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    }
    if !f.all_states {
        sql.push_str(" AND state = 'published'");
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
    let states = if all_states {
        ""
    } else {
        " AND state = 'published'"
    };
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
    let state = r.text(0)?;
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

/// The current time in the unit of `release_at`.
pub fn now() -> i64 {
    now_ms()
}
