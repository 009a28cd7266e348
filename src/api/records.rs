//! How the things the webhook API lists look to `q` and `sort` (see [`super::query`]): their
//! scalar fields, by Harbor's names.

use super::query::{Field, Kind, Record, Val};
use crate::dispatch::policy::Policy;

/// A policy's fields for `q` and `sort`.
pub const POLICY_FIELDS: &[Field] = &[
    Field::new("id", Kind::Int),
    Field::new("name", Kind::Text),
    Field::new("description", Kind::Text),
    Field::new("project_id", Kind::Int),
    Field::new("creator", Kind::Text),
    Field::new("creation_time", Kind::Time),
    Field::new("update_time", Kind::Time),
    Field::new("enabled", Kind::Bool),
];

impl Record for Policy {
    fn field(&self, key: &str) -> Option<Val> {
        Some(match key {
            "id" => Val::Int(self.id),
            "name" => Val::Text(self.name.clone()),
            "description" => Val::Text(self.description.clone()),
            "project_id" => Val::Int(self.project_id),
            "creator" => Val::Text(self.creator.clone()),
            "creation_time" => Val::Time(self.created_at),
            "update_time" => Val::Time(self.updated_at),
            "enabled" => Val::Bool(self.enabled),
            _ => return None,
        })
    }
}
