//! The per-process cache of what every event's job reads: the policies fan-out reads, the
//! notification switch, repositories' first-seen times, and the ids of resource URL hosts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::policies;

/// What every event's job reads, cached per process: the policies fan-out reads and the
/// notification switch (see the store's module doc), and repositories' first-seen times
/// ([`super::knowledge::repository_created_cached`]).
#[derive(Default)]
pub struct PolicyCache {
    state: Mutex<CacheState>,
    /// Repository → first-seen time (unix seconds; `None`: wharf knows no manifest of it)
    /// and when it was read.
    repositories: Mutex<HashMap<String, (Option<i64>, std::time::Instant)>>,
    /// Resource URL host → its id in `hosts` (schema 22): committed, never changed or deleted,
    /// so never stale.
    hosts: Mutex<HashMap<String, i64>>,
}

/// How long a repository's first-seen time is taken from the cache. It only changes when
/// the repository's oldest manifest is deleted, or when wharf learns the first manifest of a
/// repository it knew nothing of (one pushed before wharf was in front of the registry):
/// through this process the entry is dropped at once (unless a pull's event read "none" in
/// the same moment, from a transaction that did not see the push yet); through another
/// replica, this one may report the older time, or none, for at most this long.
pub const REPOSITORY_DATE_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct CacheState {
    /// Moves on with every invalidation: a value loaded under an older generation is stale.
    generation: u64,
    notification_enabled: Option<bool>,
    by_project: HashMap<String, Arc<Vec<policies::Fanout>>>,
}

impl PolicyCache {
    /// Forget everything cached.
    pub fn invalidate(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.generation += 1;
            s.notification_enabled = None;
            s.by_project.clear();
        }
    }

    fn generation(&self) -> u64 {
        self.state.lock().map(|s| s.generation).unwrap_or(0)
    }

    /// The cached first-seen time of `repository` (unix seconds), if read within
    /// [`REPOSITORY_DATE_TTL`]: `Some(None)` when wharf knew no manifest of it then (a
    /// repository pushed before wharf, whose every pull would otherwise ask again).
    pub fn repository_created(&self, repository: &str) -> Option<Option<i64>> {
        let r = self.repositories.lock().ok()?;
        let (created, at) = r.get(repository)?;
        (at.elapsed() < REPOSITORY_DATE_TTL).then_some(*created)
    }

    /// Cache the first-seen time of `repository`, just read (`None`: no manifest known).
    pub fn put_repository_created(&self, repository: &str, created: Option<i64>) {
        if let Ok(mut r) = self.repositories.lock() {
            if r.len() > 10_000 && !r.contains_key(repository) {
                r.clear();
            }
            r.insert(repository.to_string(), (created, std::time::Instant::now()));
        }
    }

    /// A manifest of `repository` was forgotten: its first-seen time may have changed.
    pub fn forget_repository(&self, repository: &str) {
        if let Ok(mut r) = self.repositories.lock() {
            r.remove(repository);
        }
    }

    /// A manifest of `repository` was learned: if the cache said wharf knew none, it no
    /// longer holds.
    pub fn forget_unknown_repository(&self, repository: &str) {
        if let Ok(mut r) = self.repositories.lock()
            && matches!(r.get(repository), Some((None, _)))
        {
            r.remove(repository);
        }
    }

    /// The id of `host` in `hosts`, if this process has seen it committed.
    pub fn host_id(&self, host: &str) -> Option<i64> {
        self.hosts.lock().ok()?.get(host).copied()
    }

    /// `host` has id `id` in `hosts`: call only after the row is committed.
    pub fn put_host_id(&self, host: String, id: i64) {
        if let Ok(mut h) = self.hosts.lock() {
            if h.len() > 10_000 {
                h.clear();
            }
            h.insert(host, id);
        }
    }

    /// The cached policies of `project`.
    pub fn policies(&self, project: &str) -> Option<Arc<Vec<policies::Fanout>>> {
        self.state.lock().ok()?.by_project.get(project).cloned()
    }

    /// Cache `list`, loaded while the cache was at `generation` (dropped if it moved on since:
    /// the list may predate a policy change).
    pub fn put_policies(&self, generation: u64, project: &str, list: Arc<Vec<policies::Fanout>>) {
        if let Ok(mut s) = self.state.lock()
            && s.generation == generation
        {
            if s.by_project.len() > 10_000 {
                s.by_project.clear();
            }
            s.by_project.insert(project.to_string(), list);
        }
    }

    pub fn notification_enabled(&self) -> Option<bool> {
        self.state.lock().ok()?.notification_enabled
    }

    pub fn put_notification_enabled(&self, generation: u64, on: bool) {
        if let Ok(mut s) = self.state.lock()
            && s.generation == generation
        {
            s.notification_enabled = Some(on);
        }
    }

    /// The generation to pass to `put_*` for a value about to be loaded.
    pub fn loading(&self) -> u64 {
        self.generation()
    }
}
