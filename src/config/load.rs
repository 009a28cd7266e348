//! Loading a configuration: the YAML file, `WHARF_…` overrides ([`super::env`]), the secret
//! files, validation with messages that name the key, and the masked print of `check-config`.

use std::path::Path;
use std::time::Duration;

use super::env::{apply_override, is_kubernetes_service_link, override_path};
use super::{
    CONFIG_ENV, Config, ConfigError, ENV_PREFIX, MAX_LOG_BUFFER, MAX_WORKER_THREADS,
    MIN_ADMIN_PASSWORD_CHARS, MIN_SIDE_API_TOKEN_CHARS, ProjectConfig, WorkerThreads, bytesize,
    invalid, read_secret_file,
};

/// The longest a delivery attempt may be given (`notification.webhook_job_http_client_timeout`).
const MAX_ATTEMPT_SECS: u64 = 3600;
/// Most client connections (`server.max_connections`).
const MAX_CONNECTIONS: usize = 1 << 20;
/// Most delivery attempts at once, in all and per target (`notification.max_in_flight`,
/// `notification.per_target_concurrency`).
const MAX_ATTEMPTS_AT_ONCE: usize = 65_536;
/// Most PostgreSQL connections of one replica (`store.pool_size`).
const MAX_POOL_SIZE: usize = 1_000;
/// Bounds of a `store.statement_timeout` that is not `0s` (PostgreSQL counts it in whole
/// milliseconds; an hour is far past any statement of wharf's).
const MIN_STATEMENT_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_STATEMENT_TIMEOUT: Duration = Duration::from_secs(3600);

/// `key` names `path`, which must be a file (read later: at start, or when it changes).
fn readable_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{} is not a readable file", path.display()),
        ))
    }
}

impl Config {
    /// Read `path`, apply `WHARF_…` overrides from the process environment, validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // the one place that reads the process environment (everything else is handed it)
        #[allow(clippy::disallowed_methods)]
        let env = std::env::vars();
        Self::from_yaml_with_env(&text, path, env)
    }

    /// Parse `text` (named `origin` in messages), apply overrides from `env`, validate.
    pub fn from_yaml_with_env(
        text: &str,
        origin: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Yaml {
                path: origin.to_path_buf(),
                source,
            })?;
        if value.is_null() {
            value = serde_yaml_ng::Value::Mapping(Default::default());
        }
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, v)| {
                k.starts_with(ENV_PREFIX) && k != CONFIG_ENV && !is_kubernetes_service_link(k, v)
            })
            .collect();
        overrides.sort();
        for (var, raw) in &overrides {
            apply_override(&mut value, var, raw)?;
        }
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                "config".to_string()
            } else {
                key
            };
            let reason = e.into_inner().to_string();
            // an error about a key an env variable set names the variable
            let from_env = overrides.iter().find(|(var, _)| {
                let path = override_path(var).join(".");
                let (parent, last) = path.rsplit_once('.').unwrap_or(("config", &path));
                key == path || (key == parent && reason.contains(&format!("`{last}`")))
            });
            match from_env {
                Some((var, _)) => invalid(&key, format!("{reason} (set by {var})")),
                None => invalid(&key, reason),
            }
        })?;
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Replace `admin_password_file` / `side_api_token_file` by what they hold.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.admin_password_file {
            if !self.admin_password.is_empty() {
                return Err(invalid(
                    "admin_password_file",
                    "set admin_password or admin_password_file, not both",
                ));
            }
            self.admin_password =
                read_secret_file(path).map_err(|source| ConfigError::SecretFile {
                    key: "admin_password_file",
                    path: path.clone(),
                    source,
                })?;
        }
        if let Some(path) = &self.side_api_token_file {
            if self.side_api_token.is_some() {
                return Err(invalid(
                    "side_api_token_file",
                    "set side_api_token or side_api_token_file, not both",
                ));
            }
            self.side_api_token =
                Some(
                    read_secret_file(path).map_err(|source| ConfigError::SecretFile {
                        key: "side_api_token_file",
                        path: path.clone(),
                        source,
                    })?,
                );
        }
        Ok(())
    }

    /// Checks that serde cannot express. Every message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.admin_password.is_empty() {
            return Err(invalid(
                "admin_password",
                "must not be empty (set admin_password, WHARF_ADMIN_PASSWORD or admin_password_file)",
            ));
        }
        if self.admin_password.expose().chars().count() < MIN_ADMIN_PASSWORD_CHARS {
            return Err(invalid(
                "admin_password",
                format!("must be at least {MIN_ADMIN_PASSWORD_CHARS} characters"),
            ));
        }
        if let Some(url) = &self.external_url {
            check_base_url("external_url", url)?;
        }
        check_base_url("upstream.registry", &self.upstream.registry)?;
        if let Some(url) = &self.upstream.chartmuseum {
            check_base_url("upstream.chartmuseum", url)?;
        }
        if self.upstream.connect_timeout.is_zero() {
            return Err(invalid(
                "upstream.connect_timeout",
                "must be greater than 0",
            ));
        }
        for (key, d) in [
            ("server.header_timeout", self.server.header_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
            ("server.http2_keep_alive", self.server.http2_keep_alive),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.log.buffer > MAX_LOG_BUFFER {
            return Err(invalid(
                "log.buffer",
                format!("must be at most {}", bytesize::human(MAX_LOG_BUFFER)),
            ));
        }
        if self.log.buffer > 0 && self.log.flush_interval.is_zero() {
            return Err(invalid(
                "log.flush_interval",
                "must be greater than 0 (or set log.buffer: 0)",
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.server.max_connections) {
            return Err(invalid(
                "server.max_connections",
                format!("must be at least 1 and at most {MAX_CONNECTIONS}"),
            ));
        }
        if let WorkerThreads::Count(n) = self.server.worker_threads
            && !(1..=MAX_WORKER_THREADS).contains(&n)
        {
            return Err(invalid(
                "server.worker_threads",
                format!("must be auto or from 1 to {MAX_WORKER_THREADS}"),
            ));
        }
        if self.upstream.response_timeout.is_zero() {
            return Err(invalid(
                "upstream.response_timeout",
                "must be greater than 0",
            ));
        }
        crate::forward::check_tls_files(&self.upstream)?;
        if let Some(tls) = &self.tls {
            for (key, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                readable_file(key, path)?;
            }
            crate::server::tls_acceptor(&tls.cert, &tls.key).map_err(|e| match e {
                crate::server::ServerError::Pem(e) => ConfigError::Pem(e),
                crate::server::ServerError::Mismatch(inner) => ConfigError::Tls {
                    key: "tls.key",
                    detail: format!("{} does not fit tls.cert: {inner}", tls.key.display()),
                    source: Box::new(crate::server::ServerError::Mismatch(inner)),
                },
                other => ConfigError::Tls {
                    key: "tls",
                    detail: other.to_string(),
                    source: Box::new(other),
                },
            })?;
        }
        if let Some(url) = &self.store.url {
            let target = url.parse().map_err(|reason| invalid("store.url", reason))?;
            if let Some(ca) = &target.sslrootcert {
                if !ca.is_file() {
                    return Err(invalid(
                        "store.url",
                        format!("sslrootcert {} is not a readable file", ca.display()),
                    ));
                }
                crate::pem::check_roots(crate::store::pg::SSLROOTCERT_KEY, ca)?;
            }
        } else if self.store.password_file.is_some() {
            return Err(invalid(
                "store.password_file",
                "is only used with store.url (PostgreSQL); for `wharf store copy`, pass --password-file",
            ));
        }
        if let Some(p) = &self.store.password_file {
            readable_file("store.password_file", p)?;
        }
        if !(4..=MAX_POOL_SIZE).contains(&self.store.pool_size) {
            return Err(invalid(
                "store.pool_size",
                format!(
                    "must be at least 4 (a writer, a reader, the dispatcher and the change \
                     listener) and at most {MAX_POOL_SIZE}"
                ),
            ));
        }
        if self.store.connect_timeout.is_zero() {
            return Err(invalid("store.connect_timeout", "must be greater than 0"));
        }
        let st = self.store.statement_timeout;
        if !st.is_zero() && !(MIN_STATEMENT_TIMEOUT..=MAX_STATEMENT_TIMEOUT).contains(&st) {
            return Err(invalid(
                "store.statement_timeout",
                "must be 0s (no limit) or from 100ms to 1h",
            ));
        }
        let timeout = self.notification.webhook_job_http_client_timeout;
        if timeout > MAX_ATTEMPT_SECS {
            return Err(invalid(
                "notification.webhook_job_http_client_timeout",
                format!("must be at most {MAX_ATTEMPT_SECS} (seconds: an hour)"),
            ));
        }
        let attempt = Duration::from_secs(timeout);
        if self.store.claim_lease < attempt + Duration::from_secs(5) {
            return Err(invalid(
                "store.claim_lease",
                format!(
                    "must be at least notification.webhook_job_http_client_timeout + 5s ({})",
                    humantime::format_duration(attempt + Duration::from_secs(5))
                ),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if let Some(p) = &self.events.token_cert_bundle {
            crate::events::operator::TokenVerifier::from_pem_file(p)?;
        }
        if self
            .side_api_token
            .as_ref()
            .is_some_and(|t| t.expose().chars().count() < MIN_SIDE_API_TOKEN_CHARS)
        {
            return Err(invalid(
                "side_api_token",
                format!("must be at least {MIN_SIDE_API_TOKEN_CHARS} characters"),
            ));
        }
        if !self.events.enabled
            && let Some((name, _)) = self
                .projects
                .iter()
                .find(|(_, p)| p.storage_limit.is_some())
        {
            return Err(invalid(
                &format!("projects.{name}.storage_limit"),
                "quotas need events.enabled: true (wharf learns usage from the manifests it observes)",
            ));
        }
        if !(1..=100).contains(&self.quota.warning_threshold) {
            return Err(invalid(
                "quota.warning_threshold",
                "must be a percentage from 1 to 100",
            ));
        }
        let n = &self.notification;
        if n.webhook_job_http_client_timeout == 0 {
            return Err(invalid(
                "notification.webhook_job_http_client_timeout",
                "must be at least 1 (seconds)",
            ));
        }
        if !(1..=MAX_ATTEMPTS_AT_ONCE).contains(&n.max_in_flight) {
            return Err(invalid(
                "notification.max_in_flight",
                format!("must be at least 1 and at most {MAX_ATTEMPTS_AT_ONCE}"),
            ));
        }
        if !(1..=MAX_ATTEMPTS_AT_ONCE).contains(&n.per_target_concurrency) {
            return Err(invalid(
                "notification.per_target_concurrency",
                format!("must be at least 1 and at most {MAX_ATTEMPTS_AT_ONCE}"),
            ));
        }
        if n.breaker_failures == 0 {
            return Err(invalid(
                "notification.breaker_failures",
                "must be at least 1",
            ));
        }
        n.backoff
            .validate()
            .map_err(|(field, reason)| invalid(&format!("notification.backoff.{field}"), reason))?;
        if let Some(p) = &n.ca_bundle {
            readable_file("notification.ca_bundle", p)?;
            crate::pem::check_roots("notification.ca_bundle", p)?;
        }
        if self.users.failed_login_burst == 0 {
            return Err(invalid("users.failed_login_burst", "must be at least 1"));
        }
        if self.users.failed_login_interval.is_zero() {
            return Err(invalid(
                "users.failed_login_interval",
                "must be greater than 0",
            ));
        }
        if let Some(p) = &self.users.htpasswd {
            readable_file("users.htpasswd", p)?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("{:?}: {e}", self.log.level)))?;
        let filters =
            std::iter::once(("events.ignore_pulls".to_string(), &self.events.ignore_pulls)).chain(
                self.projects
                    .iter()
                    .map(|(n, p)| (format!("projects.{n}.ignore_pulls"), &p.ignore_pulls)),
            );
        for (key, f) in filters {
            for (list, patterns) in [("users", &f.users), ("user_agents", &f.user_agents)] {
                let key = format!("{key}.{list}");
                crate::glob::check_all(&key, patterns)
                    .map_err(|e| invalid(&e.field(), e.problem.to_string()))?;
            }
        }
        for name in self.projects.keys() {
            if !crate::route::is_name_component(name) {
                return Err(invalid(
                    &format!("projects.{name}"),
                    "a project name is one repository-name component: lowercase letters, digits and . _ - separators",
                ));
            }
        }
        Ok(())
    }

    /// `external_url` without a trailing slash, or `http://<listen>` when unset.
    pub fn external_base(&self) -> String {
        match &self.external_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }

    /// Host (and port) part of the external URL, as used in event resource URLs.
    pub fn external_host(&self) -> String {
        let base = self.external_base();
        let rest = base.split_once("://").map(|(_, r)| r).unwrap_or(&base);
        rest.split('/').next().unwrap_or(rest).to_string()
    }

    /// The project's settings, or the defaults for a project not named in the config.
    pub fn project(&self, name: &str) -> ProjectConfig {
        self.projects.get(name).cloned().unwrap_or_default()
    }

    /// Is the project public?
    pub fn is_public(&self, project: &str) -> bool {
        self.projects.get(project).is_some_and(|p| p.public)
    }

    /// Are pulls by this operator / user agent in this project not events?
    pub fn pull_ignored(&self, project: &str, operator: &str, user_agent: Option<&str>) -> bool {
        self.events.ignore_pulls.matches(operator, user_agent)
            || self
                .projects
                .get(project)
                .is_some_and(|p| p.ignore_pulls.matches(operator, user_agent))
    }

    /// The effective configuration as YAML, secrets masked (for `wharf check-config`).
    pub fn to_masked_yaml(&self) -> String {
        let mut effective = self.clone();
        effective.external_url = Some(self.external_base());
        serde_yaml_ng::to_string(&effective).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

fn check_base_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| invalid(key, format!("{url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(invalid(
                key,
                format!("{url:?} must start with http:// or https://"),
            ));
        }
    }
    if uri.authority().is_none() {
        return Err(invalid(key, format!("{url:?} has no host")));
    }
    if uri.query().is_some() {
        return Err(invalid(key, format!("{url:?} must not have a query")));
    }
    Ok(())
}
