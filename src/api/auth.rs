//! Who is calling the API, and what they may do.
//!
//! HTTP Basic only. `admin` with `admin_password` is the system administrator: everything.
//! Other users come from `users.htpasswd` (bcrypt, the registry's format; re-read when the file
//! changes); a user listed in `projects.<name>.admins` administers that project's webhooks and
//! gets 403 on every other project and on system settings. bcrypt checks are slow by design, so
//! a successful check is remembered (as a SHA-256 of the credentials) for five minutes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
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

/// A bcrypt hash (cost 10) of a password nobody has, checked for unknown users.
const UNKNOWN_USER_HASH: &str = "$2y$10$svXzvtsIB/wPGLSilrMTCOSmPafhQngozYoaejAoWHla1zOyvFG5O";

/// The htpasswd users.
#[derive(Default)]
pub struct Users {
    path: Option<PathBuf>,
    state: Mutex<UsersState>,
}

#[derive(Default)]
struct UsersState {
    loaded: Option<SystemTime>,
    hashes: HashMap<String, String>,
    /// user → (sha256 of "user:password", when verified)
    verified: HashMap<String, ([u8; 32], Instant)>,
}

impl Users {
    pub fn new(path: Option<PathBuf>) -> Users {
        Users {
            path,
            state: Mutex::new(UsersState::default()),
        }
    }

    fn reload_if_changed(&self, st: &mut UsersState) {
        let Some(path) = &self.path else { return };
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if mtime.is_some() && mtime == st.loaded {
            return;
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                st.hashes = text
                    .lines()
                    .filter_map(|l| l.trim().split_once(':'))
                    .map(|(u, h)| (u.to_string(), h.trim().to_string()))
                    .collect();
                st.verified.clear();
                st.loaded = mtime;
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read users.htpasswd")
            }
        }
    }

    /// The names in the htpasswd file, sorted.
    pub fn names(&self) -> Vec<String> {
        let Ok(mut st) = self.state.lock() else {
            return Vec::new();
        };
        self.reload_if_changed(&mut st);
        let mut names: Vec<String> = st.hashes.keys().cloned().collect();
        names.sort();
        names
    }

    /// Is `password` right for `user`?
    pub fn check(&self, user: &str, password: &str) -> bool {
        let fingerprint: [u8; 32] = sha2::Sha256::digest(format!("{user}:{password}")).into();
        let hash = {
            let Ok(mut st) = self.state.lock() else {
                return false;
            };
            self.reload_if_changed(&mut st);
            if let Some((fp, at)) = st.verified.get(user)
                && at.elapsed() < REMEMBER
                && bool::from(fp.ct_eq(&fingerprint))
            {
                return true;
            }
            st.hashes.get(user).cloned()
        };
        // an unknown user costs the same bcrypt check as a known one: no user enumeration
        // by timing
        let Some(hash) = hash else {
            let _ = bcrypt::verify(password, UNKNOWN_USER_HASH);
            return false;
        };
        let ok = bcrypt::verify(password, &hash).unwrap_or(false);
        if ok && let Ok(mut st) = self.state.lock() {
            st.verified
                .insert(user.to_string(), (fingerprint, Instant::now()));
        }
        ok
    }
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
    let users = app.users.clone();
    let u = user.clone();
    let ok = tokio::task::spawn_blocking(move || users.check(&u, &pass))
        .await
        .unwrap_or(false);
    if ok {
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
    match &caller {
        Caller::Admin => Ok(caller),
        Caller::User(u) => {
            let allowed = app
                .config
                .projects
                .get(project)
                .is_some_and(|p| p.admins.iter().any(|a| a == u));
            if allowed {
                Ok(caller)
            } else {
                Err(ApiError::forbidden(format!(
                    "{u} is not an administrator of project {project}"
                )))
            }
        }
    }
}
