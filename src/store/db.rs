//! Db: the one interface every store function works through, whatever the backend.
//!
//! A store function gets a [`Db`] — the connection of the job it runs in (a transaction for
//! writes) — and speaks a common dialect of SQL: `?1`-style numbered parameters (rewritten to
//! `$1` for PostgreSQL), integers as 64-bit (`BIGINT`), booleans as `0`/`1`, `RETURNING` for
//! generated ids, `ON CONFLICT … DO UPDATE` upserts, and `CAST(… AS BIGINT)` around `SUM`.
//! Where the dialects differ (row locks, `SKIP LOCKED`), a function asks [`Db::backend`].
//!
//! The job's side effects that matter after COMMIT — events published, deliveries created,
//! policies changed — are recorded on the [`Db`] itself ([`Effects`]) and handed to the store
//! once the transaction is committed: no thread-local side channel.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use super::outbox::{Born, Intake};
use super::pg::PgConn;
use super::{PolicyCache, StoreError};
use crate::events::EventKind;

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A parameter value. Integers are `BIGINT`, text is `TEXT`, bytes a `BLOB` on SQLite and a
/// `uuid` (16 bytes) or `bytea` on PostgreSQL; [`Value::Null`] binds as SQL NULL whatever the
/// column's type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
    /// A content digest as the event log keeps it (schema 16): on SQLite a canonical
    /// `sha256:<64 lowercase hex>` binds as its 32 bytes (a `BLOB`), any other as text; on
    /// PostgreSQL as text. Read back with [`Row::opt_digest`].
    Digest(&'a str),
}

/// The 32 bytes of a canonical `sha256:<64 lowercase hex>` digest (how SQLite keeps one in
/// the event log); `None` for any other text, which is kept as it is.
pub fn sha256_bytes(digest: &str) -> Option<[u8; 32]> {
    let hex = digest.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// A digest from what [`sha256_bytes`] stored: 32 bytes are a sha256; anything else is not a
/// digest wharf stored as bytes.
pub fn sha256_text(bytes: &[u8]) -> Option<String> {
    (bytes.len() == 32).then(|| format!("sha256:{}", hex::encode(bytes)))
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}

/// A UUID binds as its 16 bytes (how the event log keeps event ids since schema 15).
impl<'a> From<&'a uuid::Uuid> for Value<'a> {
    fn from(v: &'a uuid::Uuid) -> Self {
        Value::Bytes(v.as_bytes())
    }
}

/// A [`Value`] that owns its text: for a value that outlives the row or arguments it came from
/// (a statement sent ahead on PostgreSQL, a row copied by `store copy`).
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedValue {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    Digest(String),
}

impl OwnedValue {
    pub fn of(v: &Value<'_>) -> OwnedValue {
        match v {
            Value::Null => OwnedValue::Null,
            Value::Int(i) => OwnedValue::Int(*i),
            Value::Text(s) => OwnedValue::Text((*s).to_string()),
            Value::Bytes(b) => OwnedValue::Bytes(b.to_vec()),
            Value::Digest(d) => OwnedValue::Digest((*d).to_string()),
        }
    }

    pub fn value(&self) -> Value<'_> {
        match self {
            OwnedValue::Null => Value::Null,
            OwnedValue::Int(i) => Value::Int(*i),
            OwnedValue::Text(s) => Value::Text(s),
            OwnedValue::Bytes(b) => Value::Bytes(b),
            OwnedValue::Digest(d) => Value::Digest(d),
        }
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Numbered parameters: `args![a, b, c]` binds `?1`, `?2`, `?3`.
#[macro_export]
macro_rules! args {
    () => { &[] as &[$crate::store::db::Value<'_>] };
    ($($v:expr),+ $(,)?) => { &[$($crate::store::db::Value::from($v)),+] as &[$crate::store::db::Value<'_>] };
}

/// Text bound on SQLite as the store keeps it ([`without_nul`]), borrowed when it can be.
fn sqlite_text(s: &str) -> rusqlite::types::ToSqlOutput<'_> {
    use rusqlite::types::{ToSqlOutput, ValueRef};
    match without_nul(s) {
        Cow::Borrowed(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Cow::Owned(s) => ToSqlOutput::Owned(rusqlite::types::Value::Text(s)),
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Text(s) => sqlite_text(s),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Digest(d) => match sha256_bytes(d) {
                Some(b) => ToSqlOutput::Owned(rusqlite::types::Value::Blob(b.to_vec())),
                None => sqlite_text(d),
            },
        })
    }
}

impl tokio_postgres::types::ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use tokio_postgres::types::{IsNull, Type};
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) if *ty == Type::INT8 => i.to_sql(ty, out),
            Value::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) if *ty == Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
            // JSON travels as text; JSONB's binary form is a version byte, then the text
            Value::Text(s) if *ty == Type::JSON => {
                out.extend_from_slice(json_without_nul(s).as_bytes());
                Ok(IsNull::No)
            }
            Value::Text(s) if *ty == Type::JSONB => {
                out.extend_from_slice(&[1]);
                out.extend_from_slice(json_without_nul(s).as_bytes());
                Ok(IsNull::No)
            }
            Value::Bytes(b) if *ty == Type::UUID => uuid::Uuid::from_slice(b)?.to_sql(ty, out),
            Value::Bytes(b) if *ty == Type::BYTEA => b.to_sql(ty, out),
            Value::Text(s) | Value::Digest(s)
                if *ty != Type::INT8
                    && *ty != Type::INT4
                    && *ty != Type::INT2
                    && *ty != Type::UUID
                    && *ty != Type::BYTEA =>
            {
                without_nul(s).as_ref().to_sql(ty, out)
            }
            other => Err(format!("a {other:?} cannot be bound to a {ty} parameter").into()),
        }
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        use tokio_postgres::types::Type;
        [
            Type::INT8,
            Type::INT4,
            Type::INT2,
            Type::TEXT,
            Type::VARCHAR,
            Type::BPCHAR,
            Type::NAME,
            Type::JSON,
            Type::JSONB,
            Type::UUID,
            Type::BYTEA,
            Type::UNKNOWN,
        ]
        .contains(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// One result row.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r tokio_postgres::Row),
}

/// An integer column of a PostgreSQL row, whatever its width (a literal or a `CASE` is
/// `integer`, a column `bigint`).
fn pg_int(r: &tokio_postgres::Row, i: usize) -> Result<Option<i64>, StoreError> {
    use tokio_postgres::types::Type;
    let ty = r.columns().get(i).map(|c| c.type_().clone());
    Ok(match ty {
        Some(t) if t == Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(i64::from),
        Some(t) if t == Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(i64::from),
        _ => r.try_get::<_, Option<i64>>(i)?,
    })
}

impl Row<'_> {
    pub fn i64(&self, i: usize) -> Result<i64, StoreError> {
        match self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Postgres(r) => pg_int(r, i)?.ok_or(StoreError::Null(i)),
        }
    }

    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Postgres(r) => pg_int(r, i),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        match self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Postgres(r) => Ok(r.try_get(i)?),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Postgres(r) => Ok(r.try_get(i)?),
        }
    }

    /// A column of bytes: SQLite's `BLOB` or text (as its UTF-8), PostgreSQL's `bytea`;
    /// `Ok(None)` for NULL.
    pub fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Row::Sqlite(r) => {
                use rusqlite::types::ValueRef;
                match r.get_ref(i)? {
                    ValueRef::Null => Ok(None),
                    ValueRef::Blob(b) | ValueRef::Text(b) => Ok(Some(b.to_vec())),
                    _ => Ok(Some(r.get(i)?)),
                }
            }
            Row::Postgres(r) => Ok(r.try_get(i)?),
        }
    }

    /// A UUID column: 16 bytes (SQLite `BLOB`, PostgreSQL `uuid`), or, on SQLite, text that
    /// could not be converted when the column became bytes (schema 15). `Ok(None)` for NULL;
    /// an error for any other value.
    pub fn opt_uuid(&self, i: usize) -> Result<Option<uuid::Uuid>, StoreError> {
        match self {
            Row::Sqlite(r) => {
                use rusqlite::types::ValueRef;
                match r.get_ref(i)? {
                    ValueRef::Null => Ok(None),
                    ValueRef::Blob(b) => uuid::Uuid::from_slice(b)
                        .map(Some)
                        .map_err(|_| StoreError::NotUuid(i)),
                    ValueRef::Text(t) => std::str::from_utf8(t)
                        .ok()
                        .and_then(|t| uuid::Uuid::try_parse(t).ok())
                        .map(Some)
                        .ok_or(StoreError::NotUuid(i)),
                    _ => Err(StoreError::NotUuid(i)),
                }
            }
            Row::Postgres(r) => Ok(r.try_get(i)?),
        }
    }

    /// A digest column of the event log (see [`Value::Digest`]): SQLite's 32 bytes as
    /// `sha256:<hex>`, text as it is; `Ok(None)` for NULL.
    pub fn opt_digest(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self {
            Row::Sqlite(r) => {
                use rusqlite::types::ValueRef;
                match r.get_ref(i)? {
                    ValueRef::Blob(b) => sha256_text(b).map(Some).ok_or(StoreError::NotDigest(i)),
                    _ => Ok(r.get(i)?),
                }
            }
            Row::Postgres(r) => Ok(r.try_get(i)?),
        }
    }

    pub fn uuid(&self, i: usize) -> Result<uuid::Uuid, StoreError> {
        self.opt_uuid(i)?.ok_or(StoreError::Null(i))
    }

    /// A non-negative size or count column as `u64` (negative values read as 0).
    pub fn u64(&self, i: usize) -> Result<u64, StoreError> {
        Ok(self.i64(i)?.max(0) as u64)
    }

    pub fn opt_u64(&self, i: usize) -> Result<Option<u64>, StoreError> {
        Ok(self.opt_i64(i)?.map(|v| v.max(0) as u64))
    }
}

/// What a write job did that the store acts on after COMMIT.
#[derive(Debug, Default)]
pub struct Effects {
    /// Kinds of the events published (metrics count an event when it is published).
    pub published: Vec<EventKind>,
    /// Deliveries were created or made due again: wake the dispatcher.
    pub deliveries: Due,
    /// Policies or the notification switch changed: drop cached policies (every replica).
    pub policies: bool,
    /// Policies triggered by the published events: (policy id, event type, unix ms). Written
    /// to `last_triggers` by the store shortly after, in one sorted statement per flush (see
    /// [`super::Store::flush_triggers`]), not inside the event's transaction.
    pub triggers: Vec<(i64, EventKind, i64)>,
    /// Deliveries created already claimed by this process (see [`super::outbox::Intake`]):
    /// handed to the dispatcher after COMMIT; dropped with the job if it rolls back, which
    /// gives their attempt slots back.
    pub born: Vec<Born>,
    /// Resource URL hosts this job added to `hosts` or looked up there, with their ids:
    /// cached after COMMIT (before it, the row may yet be rolled back).
    pub hosts: Vec<(String, i64)>,
}

impl Effects {
    /// Add `other`'s effects to these (a group commit's jobs).
    pub fn merge(&mut self, other: Effects) {
        self.published.extend(other.published);
        self.deliveries.merge(other.deliveries);
        self.policies |= other.policies;
        self.triggers.extend(other.triggers);
        self.born.extend(other.born);
        self.hosts.extend(other.hosts);
    }
}

/// A generated id that a statement sent ahead returns ([`Db::insert_id_later`]): known once
/// the job's statements have been waited for (at the latest after COMMIT).
#[derive(Debug, Clone, Default)]
pub struct LaterId(Arc<OnceLock<i64>>);

impl LaterId {
    /// The id, once its statement has been answered.
    pub fn get(&self) -> Option<i64> {
        self.0.get().copied()
    }

    /// Record the id (the first value wins).
    pub fn set(&self, id: i64) {
        let _ = self.0.set(id);
    }
}

/// Deliveries a job made due, for the dispatcher it wakes after COMMIT.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Due {
    #[default]
    Nothing,
    /// For these target addresses (a fan-out): the dispatcher adds them to the list of
    /// addresses with pending deliveries it keeps, instead of scanning for that list again.
    To(BTreeSet<String>),
    /// For addresses not named here (a redelivery, a retry, a lease taken back, the switch
    /// turned on): the dispatcher scans.
    Anywhere,
}

impl Due {
    /// These deliveries and `other`'s.
    pub fn merge(&mut self, other: Due) {
        match (&mut *self, other) {
            (_, Due::Nothing) | (Due::Anywhere, _) => {}
            (Due::To(mine), Due::To(theirs)) => mine.extend(theirs),
            (me, other) => *me = other,
        }
    }
}

enum Conn<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(&'a PgConn),
}

/// A function call a job holds back so that it travels inside the job's next statement (see
/// [`Db::carry`]).
pub struct Carried {
    /// The call, `name(?1, …)`, its arguments numbered from 1.
    pub call: &'static str,
    pub args: Vec<OwnedValue>,
}

impl Carried {
    /// The call with its arguments numbered from `first` (after a statement's own `first - 1`).
    pub fn call_from(&self, first: usize) -> String {
        let mut out = String::with_capacity(self.call.len() + 16);
        let mut rest = self.call;
        while let Some(at) = rest.find('?') {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            match rest[..digits].parse::<usize>() {
                Ok(n) => out.push_str(&(n + first - 1).to_string()),
                Err(_) => out.push_str(&rest[..digits]),
            }
            rest = &rest[digits..];
        }
        out.push_str(rest);
        out
    }

    /// The arguments, to follow a statement's own.
    pub fn values(&self) -> impl Iterator<Item = Value<'_>> {
        self.args.iter().map(OwnedValue::value)
    }
}

/// The connection of one store job; see the module doc.
pub struct Db<'a> {
    conn: Conn<'a>,
    effects: RefCell<Effects>,
    cache: Option<&'a PolicyCache>,
    intake: Option<&'a dyn Intake>,
    /// Statements sent ahead are waited for at the end of each job (it shares its transaction
    /// with others, each in a savepoint), not only at COMMIT.
    settle_each_job: bool,
    /// A call held back for the job's next statement ([`Db::carry`]).
    carried: RefCell<Option<Carried>>,
}

impl<'a> Db<'a> {
    pub fn sqlite(conn: &'a rusqlite::Connection) -> Db<'a> {
        Db {
            conn: Conn::Sqlite(conn),
            effects: RefCell::default(),
            cache: None,
            intake: None,
            settle_each_job: false,
            carried: RefCell::default(),
        }
    }

    pub fn postgres(conn: &'a PgConn) -> Db<'a> {
        Db {
            conn: Conn::Postgres(conn),
            effects: RefCell::default(),
            cache: None,
            intake: None,
            settle_each_job: false,
            carried: RefCell::default(),
        }
    }

    /// The job shares its transaction with others: what it sent ahead is waited for when it
    /// ends ([`Db::end_job`]), so that its errors are its own.
    pub fn settling_each_job(mut self, yes: bool) -> Db<'a> {
        self.settle_each_job = yes;
        self
    }

    /// A job's work is done: send the call it carried, if any ([`Db::carry`]); on PostgreSQL
    /// in a shared transaction, wait for the statements it sent ahead (their first error is
    /// the job's). Alone in its transaction, the commit does (`COMMIT`, or its one statement
    /// in autocommit: [`PgConn::begin_lazily`]).
    pub fn end_job(&self) -> Result<(), StoreError> {
        self.release_carried()?;
        match self.conn {
            Conn::Postgres(c) if self.settle_each_job => c.settle(),
            _ => Ok(()),
        }
    }

    /// With the process's policy cache (fan-out reads policies through it).
    pub fn with_cache(mut self, cache: &'a PolicyCache) -> Db<'a> {
        self.cache = Some(cache);
        self
    }

    /// The process's policy cache, if this job has one.
    pub fn cache(&self) -> Option<&'a PolicyCache> {
        self.cache
    }

    /// With the process's dispatcher intake (fan-out may create deliveries already claimed).
    pub fn with_intake(mut self, intake: Option<&'a dyn Intake>) -> Db<'a> {
        self.intake = intake;
        self
    }

    /// The dispatcher intake of this process, if this job has one (a writer's job).
    pub fn intake(&self) -> Option<&'a dyn Intake> {
        self.intake
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite connection, for SQLite-only work (pragmas, plans).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match self.conn {
            Conn::Sqlite(c) => Some(c),
            Conn::Postgres(_) => None,
        }
    }

    /// Run `SELECT call`, a function call whose answer the job does not need. On PostgreSQL
    /// it is held back, so that the job's next statement can run it as part of itself when
    /// that statement knows how ([`Db::take_carried`]: an event's insert, with a `WITH`
    /// clause). Each statement costs the server a message to read, run and answer beyond its
    /// work, and a push's learning and event so become one statement (and with a lazily begun
    /// transaction, see [`PgConn::begin_lazily`], no `BEGIN` or `COMMIT` either). Any other
    /// statement, or the job's end, sends the call first, as a statement of its own: the
    /// job's statements run in the order it gave them either way. For write jobs only: a job
    /// that fails before its end drops the call with the rest of its transaction.
    pub fn carry(&self, call: &'static str, args: &[Value<'_>]) -> Result<(), StoreError> {
        self.release_carried()?;
        *self.carried.borrow_mut() = Some(Carried {
            call,
            args: args.iter().map(OwnedValue::of).collect(),
        });
        match self.conn {
            // SQLite runs each statement at once, on its own thread: nothing to gain by holding
            Conn::Sqlite(_) => self.release_carried(),
            Conn::Postgres(_) => Ok(()),
        }
    }

    /// The call held back by [`Db::carry`], for the statement that runs it as part of itself
    /// (its arguments after the statement's own: [`Carried::call_from`]).
    pub fn take_carried(&self) -> Option<Carried> {
        self.carried.borrow_mut().take()
    }

    /// Send the call held back, as a statement of its own.
    fn release_carried(&self) -> Result<(), StoreError> {
        let Some(c) = self.carried.borrow_mut().take() else {
            return Ok(());
        };
        let args: Vec<Value<'_>> = c.values().collect();
        let sql = format!("SELECT {}", c.call);
        match self.conn {
            Conn::Sqlite(_) => self.exec(&sql, &args).map(|_| ()),
            Conn::Postgres(p) => p.execute_later(&sql, &args),
        }
    }

    /// Run a statement; the number of rows it changed.
    pub fn exec(&self, sql: &str, args: &[Value<'_>]) -> Result<u64, StoreError> {
        self.release_carried()?;
        match self.conn {
            Conn::Sqlite(c) => {
                Ok(c.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(args.iter()))? as u64)
            }
            Conn::Postgres(c) => c.execute(sql, args),
        }
    }

    /// Run a statement whose row count the job does not need. On PostgreSQL it is sent without
    /// waiting for its answer, pipelined with what follows (see [`super::pg`]): its error, if
    /// any, is that of the next statement waited for, or of the job's end.
    pub fn exec_later(&self, sql: &str, args: &[Value<'_>]) -> Result<(), StoreError> {
        self.release_carried()?;
        match self.conn {
            Conn::Sqlite(_) => self.exec(sql, args).map(|_| ()),
            Conn::Postgres(c) => c.execute_later(sql, args),
        }
    }

    /// Run statements without parameters (`SET LOCAL …`), several in one string. On PostgreSQL
    /// they travel as one simple-protocol message sent without waiting, as
    /// [`Db::exec_later`]'s.
    pub fn batch_later(&self, sql: &'static str) -> Result<(), StoreError> {
        self.release_carried()?;
        match self.conn {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(c) => {
                c.batch_later(sql);
                Ok(())
            }
        }
    }

    /// Run an `INSERT` (written without `RETURNING`) into a table whose key is `id`: the new
    /// row's id once the statement is answered. SQLite: the connection's last rowid (a
    /// `RETURNING` clause costs SQLite a temporary table per statement). PostgreSQL: sent ahead
    /// as [`Db::exec_later`]'s, with `RETURNING id`; the id is known after the job's statements
    /// are waited for (the job's end in a shared transaction, or COMMIT).
    pub fn insert_id_later(&self, sql: &str, args: &[Value<'_>]) -> Result<LaterId, StoreError> {
        let id = LaterId::default();
        self.release_carried()?;
        match self.conn {
            Conn::Sqlite(c) => {
                self.exec(sql, args)?;
                id.set(c.last_insert_rowid());
            }
            Conn::Postgres(c) => {
                c.query_id_later(&format!("{sql} RETURNING id"), args, id.clone())?
            }
        }
        Ok(id)
    }

    /// Every row of a query, mapped by `f`.
    pub fn rows<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.release_carried()?;
        match self.conn {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(f(&Row::Sqlite(r))?);
                }
                Ok(out)
            }
            Conn::Postgres(c) => c
                .query(sql, args)?
                .iter()
                .map(|r| f(&Row::Postgres(r)))
                .collect(),
        }
    }

    /// The first row of a query, if any, mapped by `f`.
    pub fn row<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.release_carried()?;
        match self.conn {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
                match rows.next()? {
                    Some(r) => Ok(Some(f(&Row::Sqlite(r))?)),
                    None => Ok(None),
                }
            }
            Conn::Postgres(c) => match c.query(sql, args)?.first() {
                Some(r) => Ok(Some(f(&Row::Postgres(r))?)),
                None => Ok(None),
            },
        }
    }

    /// The integer in the first column of the first row (`None`: no row, or NULL).
    pub fn int(&self, sql: &str, args: &[Value<'_>]) -> Result<Option<i64>, StoreError> {
        Ok(self.row(sql, args, |r| r.opt_i64(0))?.flatten())
    }

    /// The text in the first column of the first row (`None`: no row, or NULL).
    pub fn text(&self, sql: &str, args: &[Value<'_>]) -> Result<Option<String>, StoreError> {
        Ok(self.row(sql, args, |r| r.opt_text(0))?.flatten())
    }

    /// Record that this job published an event of `kind`.
    pub fn note_published(&self, kind: EventKind) {
        self.effects.borrow_mut().published.push(kind);
    }

    /// The kinds published so far in this job (and forget them).
    pub fn take_published(&self) -> Vec<EventKind> {
        std::mem::take(&mut self.effects.borrow_mut().published)
    }

    /// Record that policy `policy_id` was triggered by an event of `kind` at `at`.
    pub fn note_trigger(&self, policy_id: i64, kind: EventKind, at: i64) {
        self.effects
            .borrow_mut()
            .triggers
            .push((policy_id, kind, at));
    }

    /// Record that this job created deliveries (or made some due again).
    pub fn note_deliveries(&self) {
        self.effects.borrow_mut().deliveries = Due::Anywhere;
    }

    /// Record that this job created deliveries to `address` (see [`Due::To`]).
    pub fn note_deliveries_to(&self, address: &str) {
        self.effects
            .borrow_mut()
            .deliveries
            .merge(Due::To(BTreeSet::from([address.to_string()])));
    }

    /// Record a delivery this job created already claimed (see [`Effects::born`]).
    pub fn note_born(&self, born: Born) {
        self.effects.borrow_mut().born.push(born);
    }

    /// Record that `host` has id `id` in `hosts` (cached after COMMIT).
    pub fn note_host(&self, host: &str, id: i64) {
        self.effects.borrow_mut().hosts.push((host.to_string(), id));
    }

    /// Record that this job changed policies or the notification switch: this process drops
    /// its cached policies after COMMIT, and the policy version every replica watches moves on.
    /// Returns the new version.
    pub fn note_policies(&self) -> Result<i64, StoreError> {
        self.effects.borrow_mut().policies = true;
        Ok(self
            .int(
                "INSERT INTO meta (key, n) VALUES ('policy_version', 1)
                 ON CONFLICT (key) DO UPDATE SET n = meta.n + 1 RETURNING n",
                &[],
            )?
            .unwrap_or(0))
    }

    /// The effects recorded so far (and forget them).
    pub fn take_effects(&self) -> Effects {
        std::mem::take(&mut *self.effects.borrow_mut())
    }
}

/// `sql` with `?N` parameters written as PostgreSQL's `$N`.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

/// Serialize `v` to JSON text for a column (a NUL character in a string becomes U+FFFD, as
/// [`without_nul`] says).
pub fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v)
        .map(json_kept)
        .map_err(|e| StoreError::Encode(std::sync::Arc::new(e)))
}

/// JSON text as the store keeps it ([`json_without_nul`]), without a copy when it has no NUL.
pub fn json_kept(text: String) -> String {
    match json_without_nul(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(t) => t,
    }
}

/// What the store keeps of a text: NUL characters, which PostgreSQL's `text` refuses, become
/// U+FFFD on both backends (what a webhook target answers is stored whatever its bytes).
pub fn without_nul(s: &str) -> Cow<'_, str> {
    if s.as_bytes().contains(&0) {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// [`without_nul`] for JSON text: every escaped NUL (`\u0000`, which PostgreSQL's `jsonb` and
/// JSON-to-text conversions refuse) becomes the escape of U+FFFD, in strings and keys. The text
/// is not parsed: an escape is a `\u0000` after an even run of backslashes (`\\u0000` is a
/// backslash, then text), so any depth of nesting is covered and keys keep their order.
pub fn json_without_nul(text: &str) -> Cow<'_, str> {
    const NUL: &str = "\\u0000";
    // most JSON has no escape at all: one memchr decides
    if !text.as_bytes().contains(&b'\\') || !text.contains(NUL) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    for (at, _) in text.match_indices(NUL) {
        let run = bytes[..=at]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if run % 2 == 1 {
            out.push_str(&text[copied..at]);
            out.push_str("\\ufffd");
            copied = at + NUL.len();
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A carried call's arguments are numbered after the statement's own, whatever their
    /// number of digits.
    #[test]
    fn a_carried_call_is_numbered_after_the_statement() {
        let c = Carried {
            call: "f(?1, ?2, ?9, ?10)",
            args: Vec::new(),
        };
        assert_eq!(c.call_from(1), "f(?1, ?2, ?9, ?10)");
        assert_eq!(c.call_from(19), "f(?19, ?20, ?27, ?28)");
        assert_eq!(c.call_from(11), "f(?11, ?12, ?19, ?20)");
    }

    /// NUL characters become U+FFFD in text and in JSON strings and keys, at any depth; a
    /// backslash followed by `u0000` is text, not a NUL, and stays.
    #[test]
    fn nul_characters_become_replacement_characters() {
        assert_eq!(without_nul("a\0b\0"), "a\u{fffd}b\u{fffd}");
        assert!(matches!(without_nul("plain"), Cow::Borrowed("plain")));
        let v = serde_json::json!({"k\0": ["x\0", {"y": "\0"}], "n": 1, "lit": "\\u0000"});
        let kept: serde_json::Value = serde_json::from_str(&json(&v).unwrap()).unwrap();
        assert_eq!(
            kept,
            serde_json::json!({"k\u{fffd}": ["x\u{fffd}", {"y": "\u{fffd}"}], "n": 1, "lit": "\\u0000"})
        );
        let lit = json(&serde_json::json!({"lit": "\\u0000"})).unwrap();
        assert_eq!(lit, r#"{"lit":"\\u0000"}"#);
        assert!(matches!(
            json_without_nul(r#"{"lit":"\\u0000 \\\\\\u0000x"}"#),
            Cow::Borrowed(_)
        ));
        // keys keep their order
        assert_eq!(
            json_without_nul(r#"{"z":"\u0000","a":"\\\u0000"}"#),
            r#"{"z":"\ufffd","a":"\\\ufffd"}"#
        );
    }

    /// Regression: JSON nested deeper than serde_json parses (128 levels) was kept with its
    /// escaped NUL, which PostgreSQL refuses: the write failed, as the NUL outcomes once did.
    #[test]
    fn an_escaped_nul_is_replaced_at_any_depth() {
        let deep = format!("{}\"a\\u0000\"{}", "[".repeat(200), "]".repeat(200));
        let kept = json_without_nul(&deep);
        assert_eq!(
            kept,
            format!("{}\"a\\ufffd\"{}", "[".repeat(200), "]".repeat(200))
        );
    }

    /// Only a canonical sha256 digest becomes bytes, and its bytes give it back.
    #[test]
    fn sha256_digests_round_trip_through_their_bytes() {
        let d = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let b = sha256_bytes(&d).unwrap();
        assert_eq!(sha256_text(&b).as_deref(), Some(d.as_str()));
        for kept in [
            d.to_uppercase(),
            format!("sha256:{}", "0123456789ABCDEF".repeat(4)),
            format!("sha512:{}", "0123456789abcdef".repeat(4)),
            format!("{d}0"),
            d[..70].to_string(),
            "sha256:1".to_string(),
            format!("sha256:{}", "g".repeat(64)),
        ] {
            assert_eq!(sha256_bytes(&kept), None, "{kept}");
        }
        assert_eq!(sha256_text(&[0u8; 31]), None);
    }

    #[test]
    fn due_deliveries_merge_their_addresses_and_anywhere_wins() {
        let to = |a: &[&str]| Due::To(a.iter().map(|s| s.to_string()).collect());
        let mut d = Due::Nothing;
        d.merge(Due::Nothing);
        assert_eq!(d, Due::Nothing);
        d.merge(to(&["b"]));
        d.merge(to(&["a", "b"]));
        assert_eq!(d, to(&["a", "b"]));
        d.merge(Due::Anywhere);
        assert_eq!(d, Due::Anywhere);
        d.merge(to(&["c"]));
        assert_eq!(d, Due::Anywhere);
    }

    #[test]
    fn parameters_become_dollars_outside_quotes() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d IN (?2, ?10)"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d IN ($2, $10)"
        );
        assert_eq!(to_postgres("SELECT ?"), "SELECT ?");
    }
}
