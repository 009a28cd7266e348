//! Recent: what a client just resolved, shared by replicas (PostgreSQL), so tag attribution
//! and pull de-duplication hold when one client's requests land on different replicas. The
//! process's in-memory [`crate::observe::recent::Recent`] answers first; this table is what
//! the other replicas learned.
//!
//! Rows are keyed by (client, repository, digest, kind), where client is `<ip> <operator>`;
//! they are read only within `events.attribution_window` and pruned once a minute.

use super::StoreError;
use super::db::Db;
use crate::args;

/// What a row remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecentKind {
    /// The tag a client resolved to the digest (HEAD or GET by tag).
    Tag,
    /// The index whose platform manifest the digest is, as the client just pulled it.
    ParentIndex,
}

impl RecentKind {
    fn as_str(self) -> &'static str {
        match self {
            RecentKind::Tag => "tag",
            RecentKind::ParentIndex => "parent",
        }
    }
}

/// Remember `value` for (client, repository, digest, kind) as of `now` (unix ms).
pub fn remember(
    db: &Db<'_>,
    client: &str,
    repository: &str,
    digest: &str,
    kind: RecentKind,
    value: &str,
    now: i64,
) -> Result<(), StoreError> {
    db.exec_later(
        "INSERT INTO recent (client, repository, digest, kind, value, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (client, repository, digest, kind) DO UPDATE SET value = excluded.value, at = excluded.at",
        args![client, repository, digest, kind.as_str(), value, now],
    )?;
    Ok(())
}

/// The value remembered for (client, repository, digest, kind) since `since` (unix ms).
pub fn lookup(
    db: &Db<'_>,
    client: &str,
    repository: &str,
    digest: &str,
    kind: RecentKind,
    since: i64,
) -> Result<Option<String>, StoreError> {
    db.text(
        "SELECT value FROM recent WHERE client = ?1 AND repository = ?2 AND digest = ?3 AND kind = ?4 AND at >= ?5",
        args![client, repository, digest, kind.as_str(), since],
    )
}

/// Forget rows older than `before` (unix ms).
pub fn prune(db: &Db<'_>, before: i64) -> Result<u64, StoreError> {
    db.exec("DELETE FROM recent WHERE at < ?1", args![before])
}
