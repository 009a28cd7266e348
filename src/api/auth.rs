//! Who is calling the API, and what they may do.
//!
//! HTTP Basic only. `admin` with `admin_password` is the system administrator: everything.
//! Other users come from `users.htpasswd` (bcrypt, the registry's format; re-read when the file
//! changes; while the file is missing or unreadable there are no htpasswd users — fail closed);
//! a user listed in `projects.<name>.admins` administers that project's webhooks and gets 403
//! on every other project and on system settings.
//!
//! bcrypt checks are slow by design:
//! - a successful check is remembered (as a SHA-256 of the credentials) for five minutes;
//! - at most [`Users::max_concurrent_checks`] run at once (half the CPUs, at least one), the
//!   others wait, so bad logins cannot take every core from the proxy; the failed-login
//!   throttle ([`super::throttle`]) sheds the rest;
//! - an unknown user costs one bcrypt computation at the cost of a real user's hash (chosen per
//!   user name with a per-process key, so a name always takes the same time and unknown names
//!   take the times real users take), so user names cannot be found by timing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use http::HeaderMap;
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::app::App;

/// The system administrator's user name.
pub const ADMIN: &str = "admin";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `admin`: everything.
    Admin,
    /// A user from the htpasswd file.
    User(String),
}

impl Caller {
    pub fn name(&self) -> &str {
        match self {
            Caller::Admin => ADMIN,
            Caller::User(u) => u,
        }
    }
}

/// User and password of a Basic `Authorization` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

const REMEMBER: Duration = Duration::from_secs(300);

/// The htpasswd users.
pub struct Users {
    path: Option<PathBuf>,
    state: Mutex<UsersState>,
    /// Chooses the cost of an unknown user's check from the user name (never revealed).
    name_key: [u8; 32],
    /// The salt of unknown users' checks (the result is thrown away).
    dummy_salt: [u8; 16],
    /// Bounds the bcrypt checks running at once.
    permits: tokio::sync::Semaphore,
    max_checks: usize,
    running: AtomicUsize,
    /// The most checks seen running at once (for tests and debugging).
    peak: AtomicUsize,
}

impl Default for Users {
    fn default() -> Self {
        Users::new(None)
    }
}

/// One htpasswd entry.
#[derive(Clone)]
struct Entry {
    hash: String,
    cost: u32,
}

#[derive(Default)]
struct UsersState {
    /// What the loaded file was: modification time and length.
    loaded: Option<(SystemTime, u64)>,
    /// Why the file cannot be used now (logged once per change).
    unusable: Option<String>,
    users: HashMap<String, Entry>,
    /// The cost of each user's hash, in user-name order: what unknown users are given.
    costs: Vec<u32>,
    /// user → (sha256 of "user:password", when verified)
    verified: HashMap<String, ([u8; 32], Instant)>,
}

/// What a credential needs besides a lookup.
enum Pending {
    /// Known and remembered: no bcrypt.
    Remembered,
    /// A real user's hash to verify.
    Verify(String),
    /// Not a user: a bcrypt computation of this cost, then no.
    Unknown(u32),
    /// Not a user, and there are no users at all: nothing to find by timing.
    Nobody,
}

impl Users {
    pub fn new(path: Option<PathBuf>) -> Users {
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        Users::with_concurrency(path, (parallel / 2).max(1))
    }

    /// Users with at most `max_checks` bcrypt checks at once.
    pub fn with_concurrency(path: Option<PathBuf>, max_checks: usize) -> Users {
        let max_checks = max_checks.max(1);
        Users {
            path,
            state: Mutex::new(UsersState::default()),
            name_key: rand::random(),
            dummy_salt: rand::random(),
            permits: tokio::sync::Semaphore::new(max_checks),
            max_checks,
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// The most bcrypt checks that run at once.
    pub fn max_concurrent_checks(&self) -> usize {
        self.max_checks
    }

    fn reload_if_changed(&self, st: &mut UsersState) {
        let Some(path) = &self.path else { return };
        let stamp = std::fs::metadata(path).and_then(|m| Ok((m.modified()?, m.len())));
        let text = match stamp {
            Ok(stamp) if st.loaded == Some(stamp) => return,
            Ok(stamp) => std::fs::read_to_string(path).map(|t| (stamp, t)),
            Err(e) => Err(e),
        };
        match text {
            Ok((stamp, text)) => {
                let mut users = HashMap::new();
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let Some((user, hash)) = line.split_once(':') else {
                        tracing::warn!(path = %path.display(), line = n + 1, "users.htpasswd: a line without `user:hash` is ignored");
                        continue;
                    };
                    let hash = hash.trim();
                    match hash.parse::<bcrypt::HashParts>() {
                        Ok(parts) => {
                            users.insert(
                                user.to_string(),
                                Entry {
                                    hash: hash.to_string(),
                                    cost: parts.get_cost(),
                                },
                            );
                        }
                        Err(_) => {
                            tracing::warn!(path = %path.display(), line = n + 1, user, "users.htpasswd: not a bcrypt hash (htpasswd -B): the user cannot log in");
                        }
                    }
                }
                let mut names: Vec<&String> = users.keys().collect();
                names.sort();
                st.costs = names.iter().map(|n| users[*n].cost).collect();
                st.users = users;
                st.verified.clear();
                st.loaded = Some(stamp);
                if st.unusable.take().is_some() {
                    tracing::info!(path = %path.display(), users = st.users.len(), "users.htpasswd is readable again");
                }
            }
            Err(e) => {
                // fail closed: nobody from a file that cannot be read
                st.users.clear();
                st.costs.clear();
                st.verified.clear();
                st.loaded = None;
                let why = e.to_string();
                if st.unusable.as_deref() != Some(why.as_str()) {
                    tracing::error!(path = %path.display(), error = %why, "cannot read users.htpasswd: no htpasswd user can log in until it is back");
                    st.unusable = Some(why);
                }
            }
        }
    }

    /// The names in the htpasswd file, sorted.
    pub fn names(&self) -> Vec<String> {
        let Ok(mut st) = self.state.lock() else {
            return Vec::new();
        };
        self.reload_if_changed(&mut st);
        let mut names: Vec<String> = st.users.keys().cloned().collect();
        names.sort();
        names
    }

    /// The bcrypt cost an unknown `user` is checked at: a real user's cost, the same for the
    /// same name.
    fn unknown_cost(&self, costs: &[u32], user: &str) -> Option<u32> {
        if costs.is_empty() {
            return None;
        }
        let mut h = sha2::Sha256::new();
        h.update(self.name_key);
        h.update(user.as_bytes());
        let d: [u8; 32] = h.finalize().into();
        let mut n = [0u8; 8];
        n.copy_from_slice(&d[..8]);
        let i = u64::from_le_bytes(n) % costs.len() as u64;
        costs.get(usize::try_from(i).ok()?).copied()
    }

    fn lookup(&self, user: &str, fingerprint: &[u8; 32]) -> Pending {
        let Ok(mut st) = self.state.lock() else {
            return Pending::Nobody;
        };
        self.reload_if_changed(&mut st);
        if let Some((fp, at)) = st.verified.get(user)
            && at.elapsed() < REMEMBER
            && bool::from(fp.ct_eq(fingerprint))
        {
            return Pending::Remembered;
        }
        match st.users.get(user) {
            Some(e) => Pending::Verify(e.hash.clone()),
            None => match self.unknown_cost(&st.costs, user) {
                Some(cost) => Pending::Unknown(cost),
                None => Pending::Nobody,
            },
        }
    }

    /// The bcrypt part of a check.
    fn compute(&self, pending: &Pending, password: &str) -> bool {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let ok = match pending {
            Pending::Remembered => true,
            Pending::Verify(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Pending::Unknown(cost) => {
                let _ = bcrypt::hash_with_salt(password, *cost, self.dummy_salt);
                false
            }
            Pending::Nobody => false,
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        ok
    }

    fn remember(&self, user: &str, fingerprint: [u8; 32]) {
        if let Ok(mut st) = self.state.lock() {
            st.verified
                .insert(user.to_string(), (fingerprint, Instant::now()));
        }
    }

    /// Is `password` right for `user`? Blocking (bcrypt); not bounded by the semaphore.
    pub fn check(&self, user: &str, password: &str) -> bool {
        let fingerprint = fingerprint(user, password);
        let pending = self.lookup(user, &fingerprint);
        let ok = self.compute(&pending, password);
        if ok && !matches!(pending, Pending::Remembered) {
            self.remember(user, fingerprint);
        }
        ok
    }

    /// [`Users::check`] off the async threads, with at most
    /// [`Users::max_concurrent_checks`] bcrypt computations at once.
    pub async fn check_async(self: &Arc<Self>, user: String, password: String) -> bool {
        let fingerprint = fingerprint(&user, &password);
        let me = self.clone();
        let u = user.clone();
        let Ok(pending) = tokio::task::spawn_blocking(move || me.lookup(&u, &fingerprint)).await
        else {
            return false;
        };
        if matches!(pending, Pending::Remembered) {
            return true;
        }
        if matches!(pending, Pending::Nobody) {
            return false;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let me = self.clone();
        let ok = tokio::task::spawn_blocking(move || me.compute(&pending, &password))
            .await
            .unwrap_or(false);
        if ok {
            self.remember(&user, fingerprint);
        }
        ok
    }

    #[cfg(test)]
    fn peak_concurrent_checks(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

fn fingerprint(user: &str, password: &str) -> [u8; 32] {
    sha2::Sha256::digest(format!("{user}:{password}")).into()
}

/// Authenticate the request: 401 without valid credentials.
pub async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let (user, pass) = basic_credentials(headers).ok_or_else(ApiError::unauthorized)?;
    if user == ADMIN {
        let expected = app.config.admin_password.expose().as_bytes();
        return if bool::from(pass.as_bytes().ct_eq(expected)) {
            Ok(Caller::Admin)
        } else {
            Err(ApiError::unauthorized())
        };
    }
    if app.users.check_async(user.clone(), pass).await {
        Ok(Caller::User(user))
    } else {
        Err(ApiError::unauthorized())
    }
}

/// Only the system administrator.
pub async fn require_admin(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    match authenticate(app, headers).await? {
        Caller::Admin => Ok(Caller::Admin),
        Caller::User(_) => Err(ApiError::forbidden(
            "only the system administrator may do this",
        )),
    }
}

/// The system administrator, or an administrator of `project`.
pub async fn require_project_admin(
    app: &App,
    headers: &HeaderMap,
    project: &str,
) -> Result<Caller, ApiError> {
    let caller = authenticate(app, headers).await?;
    check_project_admin(app, &caller, project, project)?;
    Ok(caller)
}

/// Is `caller` the system administrator or an administrator of `project`? A refusal names the
/// project as the caller addressed it (`shown`: its name, or the id they gave).
pub fn check_project_admin(
    app: &App,
    caller: &Caller,
    project: &str,
    shown: &str,
) -> Result<(), ApiError> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::User(u) => {
            let allowed = app
                .config
                .projects
                .get(project)
                .is_some_and(|p| p.admins.iter().any(|a| a == u));
            if allowed {
                Ok(())
            } else {
                Err(not_project_admin(u, shown))
            }
        }
    }
}

/// The refusal of user `user` on project `shown` (a name, or the id they gave).
pub fn not_project_admin(user: &str, shown: &str) -> ApiError {
    ApiError::forbidden(format!("{user} is not an administrator of project {shown}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn htpasswd(dir: &std::path::Path, entries: &[(&str, &str, u32)]) -> PathBuf {
        let path = dir.join("htpasswd");
        let text: String = entries
            .iter()
            .map(|(u, p, cost)| format!("{u}:{}\n", bcrypt::hash(p, *cost).unwrap()))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Median time of `f`, in microseconds.
    fn median_us(mut f: impl FnMut()) -> u128 {
        let mut t: Vec<u128> = (0..7)
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed().as_micros()
            })
            .collect();
        t.sort();
        t[3]
    }

    // Hardening 4: an unknown user takes the time of a real user's check.
    #[test]
    fn unknown_users_take_as_long_as_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::new(Some(htpasswd(dir.path(), &[("alice", "right", 4)])));
        assert!(users.check("alice", "right"));
        let known = median_us(|| assert!(!users.check("alice", "wrong")));
        let unknown = median_us(|| assert!(!users.check("mallory", "wrong")));
        // before: cost 4 for alice against a cost-10 dummy (64 times the work)
        assert!(
            unknown < known * 4 + 2_000,
            "known user {known} µs, unknown user {unknown} µs"
        );
    }

    #[test]
    fn unknown_users_are_checked_at_a_real_users_cost_chosen_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::new(Some(htpasswd(
            dir.path(),
            &[("a", "x", 4), ("b", "x", 5), ("c", "x", 5)],
        )));
        assert!(!users.check("nobody", "x"));
        let costs = users.state.lock().unwrap().costs.clone();
        assert_eq!(costs, vec![4, 5, 5]);
        let mut seen = std::collections::HashSet::new();
        for i in 0..64 {
            let name = format!("user{i}");
            let c = users.unknown_cost(&costs, &name).unwrap();
            assert_eq!(
                users.unknown_cost(&costs, &name),
                Some(c),
                "stable per name"
            );
            assert!(costs.contains(&c));
            seen.insert(c);
        }
        assert_eq!(seen.len(), 2, "both costs are used");
        assert_eq!(users.unknown_cost(&[], "x"), None);
    }

    // Hardening 12: a deleted htpasswd file means no htpasswd users; reload on change stays.
    #[test]
    fn a_missing_htpasswd_file_means_no_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = htpasswd(dir.path(), &[("alice", "right", 4)]);
        let users = Users::new(Some(path.clone()));
        assert!(users.check("alice", "right"));
        let moved = dir.path().join("moved-away");
        std::fs::rename(&path, &moved).unwrap();
        assert!(
            !users.check("alice", "right"),
            "still accepted after removal"
        );
        assert!(!users.check("alice", "right"));
        // back: accepted again
        std::fs::rename(&moved, &path).unwrap();
        assert!(users.check("alice", "right"));
        // changed: the new password, not the old one (nor the remembered success)
        htpasswd(dir.path(), &[("alice", "new-one", 4), ("bob", "b", 4)]);
        assert!(!users.check("alice", "right"));
        assert!(users.check("alice", "new-one"));
        assert!(users.check("bob", "b"));
        // unreadable (a directory in its place): fail closed too
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(!users.check("bob", "b"));
    }

    #[test]
    fn entries_that_are_not_bcrypt_never_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(
            &path,
            format!(
                "# comment\n\nplain:secret\nmd5:$apr1$abc$def\nok:{}\n",
                bcrypt::hash("pw", 4).unwrap()
            ),
        )
        .unwrap();
        let users = Users::new(Some(path));
        assert!(!users.check("plain", "secret"));
        assert!(!users.check("md5", "x"));
        assert!(users.check("ok", "pw"));
    }

    // Hardening 13: bcrypt checks are bounded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let users = Arc::new(Users::with_concurrency(
            Some(htpasswd(dir.path(), &[("alice", "right", 6)])),
            1,
        ));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let users = users.clone();
                tokio::spawn(async move {
                    let name = if i % 2 == 0 { "alice" } else { "mallory" };
                    users.check_async(name.into(), "wrong".into()).await
                })
            })
            .collect();
        for t in tasks {
            assert!(!t.await.unwrap());
        }
        assert_eq!(users.peak_concurrent_checks(), 1);
        assert!(users.check_async("alice".into(), "right".into()).await);
    }
}
