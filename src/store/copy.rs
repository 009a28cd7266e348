//! `wharf store copy`: move an embedded (SQLite) store into PostgreSQL, so a single instance
//! can grow into several replicas without losing anything: policies and their target
//! versions, projects (ids kept), settings, the event log (with its hosts), the outbox (deliveries, attempts,
//! last triggers), knowledge, chart facts, quota usage and the side endpoint's idempotency keys. Reservations of pushes in progress
//! and the short-lived attribution memory are not copied (they lapse within minutes anyway).
//!
//! Rows keep their ids; PostgreSQL's identity sequences are moved past them. The source is read
//! in one SQLite read transaction (one snapshot of every table, even if a wharf still writes
//! it); the copy into the target is one transaction: it lands whole or not at all. A target
//! that already holds data is refused unless `replace` is set, which first empties every table
//! of the target, also those not copied.

use super::db::{Db, OwnedValue, Value, sha256_text};
use super::{Store, StoreError};

/// Tables copied, in an order that respects what refers to what; with their identity column.
pub const TABLES: &[(&str, Option<&str>)] = &[
    ("projects", Some("id")),
    ("policies", Some("id")),
    ("delivery_targets", Some("id")),
    ("settings", None),
    ("meta", None),
    ("hosts", Some("id")),
    ("events", Some("seq")),
    ("deliveries", Some("id")),
    ("attempts", Some("id")),
    ("last_triggers", None),
    ("artifacts", None),
    ("tags", None),
    ("charts", None),
    ("project_blobs", None),
    ("quota_projects", None),
    ("users", Some("id")),
    ("idempotency_keys", None),
];

/// Tables not copied (see the module doc): a target holding rows in them is refused too, and
/// `replace` empties them — a reservation or an attribution of the target's earlier content
/// would otherwise weigh on, or name, the copy's.
const NOT_COPIED: &[&str] = &["quota_reservations", "recent"];

/// Tables a freshly migrated database already fills (with the same rows the source has):
/// replaced by the copy, not a reason to refuse it.
const SEEDED: &[&str] = &["users"];

/// Errors of a copy.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "the target database already holds data ({0}); copy into an empty database, or pass --replace to empty it first"
    )]
    NotEmpty(String),
    #[error("the source must be the embedded store (no store.url in the config)")]
    SourceNotSqlite,
    #[error("the target must be a PostgreSQL store")]
    TargetNotPostgres,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rows copied per table.
pub type CopyReport = Vec<(&'static str, u64)>;

type Table = (Vec<String>, Vec<Vec<OwnedValue>>);

fn read_table(conn: &rusqlite::Connection, table: &str) -> Result<Table, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM {table}"))?;
    let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let n = columns.len();
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut row = Vec::with_capacity(n);
        for (i, column) in columns.iter().enumerate() {
            use rusqlite::types::ValueRef;
            row.push(match r.get_ref(i)? {
                ValueRef::Null => OwnedValue::Null,
                ValueRef::Integer(v) => OwnedValue::Int(v),
                ValueRef::Real(v) => OwnedValue::Int(v as i64),
                // an event's body is bytes on PostgreSQL (schema 20): a JSON body of an earlier
                // schema goes as its UTF-8
                ValueRef::Text(t) if table == "events" && column == "body" => {
                    OwnedValue::Bytes(t.to_vec())
                }
                ValueRef::Text(t) => OwnedValue::Text(String::from_utf8_lossy(t).into_owned()),
                // an event's sha256 digest (schema 16): PostgreSQL keeps it as text
                ValueRef::Blob(b) if column == "digest" => match sha256_text(b) {
                    Some(d) => OwnedValue::Text(d),
                    None => OwnedValue::Bytes(b.to_vec()),
                },
                // event ids (schema 15), packed bodies (schema 20)
                ValueRef::Blob(b) => OwnedValue::Bytes(b.to_vec()),
            });
        }
        out.push(row);
    }
    Ok((columns, out))
}

/// Copy everything from `from` (SQLite) into `to` (PostgreSQL); see the module doc.
pub async fn copy(from: &Store, to: &Store, replace: bool) -> Result<CopyReport, CopyError> {
    if from.backend() != super::Backend::Sqlite {
        return Err(CopyError::SourceNotSqlite);
    }
    if to.backend() != super::Backend::Postgres {
        return Err(CopyError::TargetNotPostgres);
    }
    let (data, used) = read_source(from).await?;
    let holding: Vec<String> = to
        .read(|db| {
            let mut holding = Vec::new();
            let tables = TABLES.iter().map(|(t, _)| t).chain(NOT_COPIED);
            for t in tables.filter(|t| !SEEDED.contains(t)) {
                if db
                    .int(&format!("SELECT COUNT(*) FROM {t}"), &[])?
                    .unwrap_or(0)
                    > 0
                {
                    holding.push(t.to_string());
                }
            }
            Ok(holding)
        })
        .await?;
    if !holding.is_empty() && !replace {
        return Err(CopyError::NotEmpty(holding.join(", ")));
    }
    let report = to
        .write(move |db| {
            for t in TABLES.iter().rev().map(|(t, _)| t).chain(NOT_COPIED) {
                if replace || SEEDED.contains(t) {
                    db.exec(&format!("DELETE FROM {t}"), &[])?;
                }
            }
            let mut report = Vec::new();
            for (table, id, (columns, rows)) in &data {
                insert_rows(db, table, columns, rows)?;
                if let Some(id) = id {
                    // past every id SQLite ever gave (AUTOINCREMENT never reuses one, also of
                    // rows deleted since: a new policy must not take a deleted one's id, and
                    // with it the deliveries that still name it)
                    let given = used.get(*table).copied().unwrap_or(0);
                    db.exec(
                        &format!(
                            "SELECT setval(pg_get_serial_sequence('{table}', '{id}'), GREATEST(COALESCE((SELECT MAX({id}) FROM {table}), 0), ?1) + 1, false)"
                        ),
                        crate::args![given],
                    )?;
                }
                report.push((*table, rows.len() as u64));
            }
            // the counters of final states see updates, not these inserts
            super::outbox::recount(db)?;
            db.note_policies()?;
            Ok(report)
        })
        .await?;
    Ok(report)
}

/// Every copied table of the SQLite store, in one snapshot, and the ids it gave.
async fn read_source(from: &Store) -> Result<(Vec<Copied>, Used), StoreError> {
    from.read(|db| {
        let conn = db.as_sqlite().ok_or(StoreError::Closed)?;
        // one snapshot: every table as of the same moment (read only, rolled back on drop)
        let snapshot = conn.unchecked_transaction()?;
        let data = TABLES
            .iter()
            .map(|(t, id)| Ok((*t, *id, read_table(&snapshot, t)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok((data, ids_used(&snapshot)?))
    })
    .await
}

/// A table read from SQLite: its name, its identity column, its rows.
type Copied = (&'static str, Option<&'static str>, Table);

/// The highest id SQLite's AUTOINCREMENT gave in each table (`sqlite_sequence`).
type Used = std::collections::HashMap<String, i64>;

fn ids_used(conn: &rusqlite::Connection) -> Result<Used, StoreError> {
    let exists = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_sequence'",
        [],
        |r| r.get::<_, i64>(0),
    )? > 0;
    if !exists {
        return Ok(Used::new());
    }
    let mut stmt = conn.prepare("SELECT name, seq FROM sqlite_sequence")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn insert_rows(
    db: &Db<'_>,
    table: &str,
    columns: &[String],
    rows: &[Vec<OwnedValue>],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        columns.join(", "),
        placeholders.join(", ")
    );
    for row in rows {
        let args: Vec<Value<'_>> = row.iter().map(OwnedValue::value).collect();
        db.exec(&sql, &args)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables are read as of one moment: rows a writer adds to two tables in one
    /// transaction while the copy reads are either in both or in neither.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_source_is_read_in_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::config::StoreConfig::default(), dir.path())
            .await
            .unwrap();
        let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let writer = tokio::spawn({
            let (store, writing) = (store.clone(), writing.clone());
            async move {
                let mut i = 0u64;
                while writing.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    store
                        .write(move |db| {
                            let key = format!("copy-test-{i}");
                            db.exec(
                                "INSERT INTO settings (key, value) VALUES (?1, 'x')",
                                crate::args![key.as_str()],
                            )?;
                            db.exec(
                                "INSERT INTO tags (repository, tag, digest, updated_at) VALUES ('p/r', ?1, 'sha256:0', 0)",
                                crate::args![key.as_str()],
                            )?;
                            Ok(())
                        })
                        .await
                        .unwrap();
                }
            }
        });
        // the rows of `table` whose `column` the writer set
        let written = |data: &[Copied], table: &str, column: usize| -> usize {
            let (_, _, (_, rows)) = data.iter().find(|(t, _, _)| *t == table).unwrap();
            let ours = |r: &&Vec<OwnedValue>| matches!(&r[column], OwnedValue::Text(k) if k.starts_with("copy-test-"));
            rows.iter().filter(ours).count()
        };
        for _ in 0..200 {
            let (data, _) = read_source(&store).await.unwrap();
            assert_eq!(written(&data, "settings", 0), written(&data, "tags", 1));
        }
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
        writer.await.unwrap();
        store.close().await;
    }
}
