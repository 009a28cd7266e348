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

struct Map<V> {
    entries: HashMap<Key, (Instant, V)>,
}

impl<V: Clone> Map<V> {
    fn insert(&mut self, key: Key, value: V, max: usize, ttl: Duration) {
        if self.entries.len() >= max {
            let now = Instant::now();
            self.entries
                .retain(|_, (t, _)| now.duration_since(*t) < ttl);
            if self.entries.len() >= max {
                let mut times: Vec<Instant> = self.entries.values().map(|(t, _)| *t).collect();
                times.sort();
                let cut = times[times.len() / 2];
                self.entries.retain(|_, (t, _)| *t > cut);
            }
        }
        self.entries.insert(key, (Instant::now(), value));
    }

    fn get(&self, key: &Key, ttl: Duration) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(t, _)| t.elapsed() < ttl)
            .map(|(_, v)| v.clone())
    }
}

/// See the module doc.
pub struct Recent {
    ttl: Duration,
    max: usize,
    tags: Mutex<Map<String>>,
    children: Mutex<Map<String>>,
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
        }
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
        if let Ok(mut m) = self.tags.lock() {
            m.insert(
                Self::key(ip, operator, repository, digest),
                tag.to_string(),
                self.max,
                self.ttl,
            );
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
        if let Ok(mut m) = self.children.lock() {
            for c in children {
                m.insert(
                    Self::key(ip, operator, repository, c),
                    index.to_string(),
                    self.max,
                    self.ttl,
                );
            }
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
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.tag_for(a, "u", "p/r", "sha256:x"), None);
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
