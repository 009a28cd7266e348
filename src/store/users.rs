//! API users' numeric ids (Harbor's `user_id`): `admin` and the users of `users.htpasswd`,
//! each given an id the first time the API shows it, never reused, the same on every replica.
//! `admin` is 1, as in Harbor.

use super::db::Db;
use super::{StoreError, now_ms};
use crate::args;

/// A user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    /// unix ms
    pub created_at: i64,
}

fn row(r: &super::db::Row<'_>) -> Result<User, StoreError> {
    Ok(User {
        id: r.i64(0)?,
        name: r.text(1)?,
        created_at: r.i64(2)?,
    })
}

/// Migration step: `admin` is the first user.
pub fn create_admin(db: &Db<'_>) -> Result<(), StoreError> {
    ensure(db, crate::api::auth::ADMIN).map(|_| ())
}

/// The row of user `name`, made when new.
pub fn ensure(db: &Db<'_>, name: &str) -> Result<User, StoreError> {
    db.exec(
        "INSERT INTO users (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        args![name, now_ms()],
    )?;
    by_name(db, name)?.ok_or(StoreError::Closed)
}

/// User `name`, if it has a row.
pub fn by_name(db: &Db<'_>, name: &str) -> Result<Option<User>, StoreError> {
    db.row(
        "SELECT id, name, created_at FROM users WHERE name = ?1",
        args![name],
        row,
    )
}

/// User `id`, if any.
pub fn by_id(db: &Db<'_>, id: i64) -> Result<Option<User>, StoreError> {
    db.row(
        "SELECT id, name, created_at FROM users WHERE id = ?1",
        args![id],
        row,
    )
}
