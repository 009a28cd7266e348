//! Recent: short-lived memory of what one client just did, for tag attribution and pull
//! de-duplication.
//!
//! Keys are (client IP, operator, repository, digest): the same client pulling the same thing.
//! - `tag`: a HEAD or GET by tag answered with digest D → a GET of D by digest soon after is
//!   reported with that tag (helm and docker resolve a tag with HEAD, then GET by digest).
//! - `child`: a GET of an index listed child C → a GET of C soon after is part of the same pull
//!   and is not a second event.
//!
//! Entries expire after `ttl`; the maps are bounded (oldest half dropped when full).
//!
//! With several replicas (the PostgreSQL store), what a client resolved is also written to the
//! store in the background ([`crate::store::recent`]), and the event job of a pull that this
//! process cannot attribute looks there: a client whose HEAD went to replica A and whose GET
//! went to replica B still gets its tag. The limit that remains: the background write of A
//! must have committed before B's pull event is written (a few milliseconds; a client that
//! pulls faster than that may see a pull reported without its tag). A client that resolves the
//! same tag to the same digest again and again (a poller, a CI loop) refreshes its shared row
//! at most once per tenth of the TTL (`SHARE_REFRESH`), not on every request: another replica
//! then sees the row for at least nine tenths of the TTL after the client's last resolution.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    ip: IpAddr,
    operator: String,
    repository: String,
    digest: String,
}

/// The part of the TTL after which an unchanged entry's shared row is written again.
const SHARE_REFRESH: u32 = 10;

struct Entry<V> {
    /// When the client last did it.
    at: Instant,
    value: V,
    /// When this value was last written for other replicas (or would have been).
    shared: Instant,
}

struct Map<V> {
    entries: HashMap<Key, Entry<V>>,
}

impl<V: Clone + PartialEq> Map<V> {
    /// Remember `value` for `key`; whether other replicas must be told (a new key or value, or
    /// the same one last told more than a [`SHARE_REFRESH`]th of `ttl` ago).
    fn insert(&mut self, key: Key, value: V, max: usize, ttl: Duration) -> bool {
        let now = Instant::now();
        if self.entries.len() >= max && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| now.duration_since(e.at) < ttl);
            if self.entries.len() >= max {
                let mut times: Vec<Instant> = self.entries.values().map(|e| e.at).collect();
                times.sort();
                let cut = times[times.len() / 2];
                self.entries.retain(|_, e| e.at > cut);
            }
        }
        if let Some(e) = self.entries.get_mut(&key)
            && e.value == value
            && now.duration_since(e.at) < ttl
            && now.duration_since(e.shared) < ttl / SHARE_REFRESH
        {
            e.at = now;
            return false;
        }
        self.entries.insert(
            key,
            Entry {
                at: now,
                value,
                shared: now,
            },
        );
        true
    }

    fn get(&self, key: &Key, ttl: Duration) -> Option<V> {
        self.entries
            .get(key)
            .filter(|e| e.at.elapsed() < ttl)
            .map(|e| e.value.clone())
    }
}

/// See the module doc.
pub struct Recent {
    ttl: Duration,
    max: usize,
    tags: Mutex<Map<String>>,
    children: Mutex<Map<String>>,
    /// The store other replicas see (PostgreSQL only).
    shared: Option<crate::store::Store>,
}

/// The client part of a shared row's key.
pub fn client_key(ip: IpAddr, operator: &str) -> String {
    format!("{ip} {operator}")
}

impl Recent {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max: max.max(2),
            tags: Mutex::new(Map {
                entries: HashMap::new(),
            }),
            children: Mutex::new(Map {
                entries: HashMap::new(),
            }),
            shared: None,
        }
    }

    /// Also write what clients resolve to `store` (several replicas), when given.
    pub fn shared_through(mut self, store: Option<crate::store::Store>) -> Self {
        self.shared = store;
        self
    }

    /// Is what this process remembers shared with other replicas?
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// How far back a shared row counts (unix ms).
    pub fn since(&self) -> i64 {
        crate::store::now_ms() - self.ttl.as_millis() as i64
    }

    fn share(
        &self,
        rows: Vec<(
            String,
            String,
            String,
            crate::store::recent::RecentKind,
            String,
        )>,
    ) {
        let Some(store) = &self.shared else {
            return;
        };
        let now = crate::store::now_ms();
        store.write_detached(
            move |c| {
                for (client, repository, digest, kind, value) in &rows {
                    crate::store::recent::remember(
                        c, client, repository, digest, *kind, value, now,
                    )?;
                }
                Ok(())
            },
            |r| {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "sharing what a client resolved failed");
                }
            },
        );
    }

    fn key(ip: IpAddr, operator: &str, repository: &str, digest: &str) -> Key {
        Key {
            ip,
            operator: operator.to_string(),
            repository: repository.to_string(),
            digest: digest.to_string(),
        }
    }

    /// The client resolved `tag` to `digest`.
    pub fn remember_tag(
        &self,
        ip: IpAddr,
        operator: &str,
        repository: &str,
        digest: &str,
        tag: &str,
    ) {
        let tell = match self.tags.lock() {
            Ok(mut m) => m.insert(
                Self::key(ip, operator, repository, digest),
                tag.to_string(),
                self.max,
                self.ttl,
            ),
            Err(_) => true,
        };
        if tell && self.shared.is_some() {
            self.share(vec![(
                client_key(ip, operator),
                repository.to_string(),
                digest.to_string(),
                crate::store::recent::RecentKind::Tag,
                tag.to_string(),
            )]);
        }
    }

    /// The tag this client recently resolved to `digest`.
    pub fn tag_for(
        &self,
        ip: IpAddr,
        operator: &str,
        repository: &str,
        digest: &str,
    ) -> Option<String> {
        self.recall(&self.tags, ip, operator, repository, digest)
    }

    /// The client pulled index `index`, whose children are `children`.
    pub fn remember_children(
        &self,
        ip: IpAddr,
        operator: &str,
        repository: &str,
        index: &str,
        children: &[String],
    ) {
        // the children other replicas must be told of
        let mut tell: Vec<&String> = Vec::new();
        match self.children.lock() {
            Ok(mut m) => {
                for c in children {
                    let key = Self::key(ip, operator, repository, c);
                    if m.insert(key, index.to_string(), self.max, self.ttl) {
                        tell.push(c);
                    }
                }
            }
            Err(_) => tell.extend(children),
        }
        if self.shared.is_some() && !tell.is_empty() {
            let client = client_key(ip, operator);
            self.share(
                tell.into_iter()
                    .map(|c| {
                        (
                            client.clone(),
                            repository.to_string(),
                            c.clone(),
                            crate::store::recent::RecentKind::ParentIndex,
                            index.to_string(),
                        )
                    })
                    .collect(),
            );
        }
    }

    /// The index this client just pulled that lists `digest`, if any.
    pub fn parent_index(
        &self,
        ip: IpAddr,
        operator: &str,
        repository: &str,
        digest: &str,
    ) -> Option<String> {
        self.recall(&self.children, ip, operator, repository, digest)
    }

    fn recall(
        &self,
        map: &Mutex<Map<String>>,
        ip: IpAddr,
        operator: &str,
        repository: &str,
        digest: &str,
    ) -> Option<String> {
        map.lock()
            .ok()?
            .get(&Self::key(ip, operator, repository, digest), self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_client_and_expires() {
        let r = Recent::new(Duration::from_millis(50), 100);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        r.remember_tag(a, "u", "p/r", "sha256:x", "v1");
        assert_eq!(r.tag_for(a, "u", "p/r", "sha256:x").as_deref(), Some("v1"));
        assert_eq!(r.tag_for(b, "u", "p/r", "sha256:x"), None);
        assert_eq!(r.tag_for(a, "other", "p/r", "sha256:x"), None);
        r.remember_children(a, "u", "p/r", "sha256:idx", &["sha256:c1".into()]);
        assert_eq!(
            r.parent_index(a, "u", "p/r", "sha256:c1").as_deref(),
            Some("sha256:idx")
        );
        #[allow(clippy::disallowed_methods)] // a synchronous test's own thread
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.tag_for(a, "u", "p/r", "sha256:x"), None);
    }

    /// A client resolving the same tag again and again tells other replicas once per tenth of
    /// the TTL, not on every request; a new tag, a new key or an old entry at once.
    #[test]
    fn an_unchanged_entry_is_shared_again_only_after_a_tenth_of_the_ttl() {
        let ttl = Duration::from_millis(200);
        let mut m: Map<String> = Map {
            entries: HashMap::new(),
        };
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let key = |d: &str| Recent::key(a, "u", "p/r", d);
        assert!(m.insert(key("d1"), "v1".into(), 100, ttl), "new");
        assert!(
            !m.insert(key("d1"), "v1".into(), 100, ttl),
            "the same, just told"
        );
        assert!(m.insert(key("d1"), "v2".into(), 100, ttl), "another tag");
        assert!(m.insert(key("d2"), "v2".into(), 100, ttl), "another digest");
        #[allow(clippy::disallowed_methods)] // a synchronous test's own thread
        std::thread::sleep(ttl / SHARE_REFRESH + Duration::from_millis(5));
        assert!(
            m.insert(key("d1"), "v2".into(), 100, ttl),
            "told a tenth of the TTL ago"
        );
        assert!(!m.insert(key("d1"), "v2".into(), 100, ttl));
        assert_eq!(m.get(&key("d1"), ttl).as_deref(), Some("v2"));
    }

    #[test]
    fn stays_bounded() {
        let r = Recent::new(Duration::from_secs(60), 10);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 0..100 {
            r.remember_tag(a, "u", "p/r", &format!("d{i}"), "t");
        }
        assert!(r.tags.lock().unwrap().entries.len() <= 10);
        assert!(r.tag_for(a, "u", "p/r", "d99").is_some());
    }
}
