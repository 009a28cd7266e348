//! Configuration: one YAML file, one struct.
//!
//! Every key has a doc comment, a serde default where one makes sense, and unknown keys are
//! rejected (`deny_unknown_fields`) so a typo fails at start-up instead of being ignored.
//! Environment variables override the file: `WHARF_<KEY>` with `__` between nesting levels,
//! e.g. `WHARF_UPSTREAM__REGISTRY=http://127.0.0.1:5000` or `WHARF_LOG__FORMAT=json`. Values are
//! read as YAML scalars, so `WHARF_TLS__CERT=/x` or `WHARF_SHUTDOWN_GRACE=10s` both work — except
//! the values of secret keys ([`LITERAL_KEYS`]: passwords, tokens, the database URL and the files
//! holding them), which are taken literally, byte for byte (`WHARF_ADMIN_PASSWORD='S3cret #1'`
//! is `S3cret #1`, not `S3cret`). `WHARF_CONFIG` names the file and is not an override; the
//! variables Kubernetes injects for a Service named `wharf` or `wharf-…` (`WHARF_PORT`,
//! `WHARF_SERVICE_HOST`, `WHARF_DB_PORT_5432_TCP_ADDR`, …) are ignored
//! ([`is_kubernetes_service_link`]).
//!
//! Secrets never appear in an error message: a secret key that is not a string is refused
//! without its value, and the contents of secret files are never printed.
//!
//! [`Config::load`] reads, overrides, deserializes and validates; every error names the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors while loading or validating the configuration. Each names the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    /// `upstream.ca_bundle`, `client_cert` or `client_key` cannot be used (names the key).
    #[error(transparent)]
    UpstreamTls(#[from] crate::forward::TlsError),
    /// A certificate or key file (`tls.cert`, `tls.key`, `notification.ca_bundle`, the
    /// `sslrootcert` of `store.url`) cannot be used (names the key).
    #[error(transparent)]
    Pem(#[from] crate::pem::PemError),
    /// `events.token_cert_bundle` cannot be used (names the key).
    #[error(transparent)]
    TokenCerts(#[from] crate::events::operator::TokenCertError),
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// The whole configuration of one wharf process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the proxy, the API and the health endpoints listen on (one port).
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Public base URL of wharf (`https://registry.example.com`). Its host is used in the
    /// resource URLs of events. Default: `http://<listen>`.
    #[serde(default)]
    pub external_url: Option<String>,
    /// The services wharf sits in front of.
    pub upstream: UpstreamConfig,
    /// Directory of the embedded database (created if missing).
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// Password of the system administrator, user `admin`: at least
    /// [`MIN_ADMIN_PASSWORD_CHARS`] characters. Required unless `admin_password_file` is set.
    #[serde(default)]
    pub admin_password: Secret,
    /// A file holding the administrator's password (a mounted secret; one trailing newline is
    /// ignored, everything else is the password). Read once at start; set it instead of
    /// `admin_password`, not with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password_file: Option<PathBuf>,
    /// Serve HTTPS with these PEM files instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Client connections: timeouts and limits of the listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// On SIGTERM/SIGINT: stop accepting, then wait at most this long for in-flight requests.
    #[serde(default = "defaults::shutdown_grace", with = "duration")]
    pub shutdown_grace: Duration,
    /// Trust `X-Forwarded-For/Proto/Host` sent by the client (set it when wharf itself sits
    /// behind a load balancer that sets them); otherwise wharf replaces them.
    #[serde(default)]
    pub trust_forwarded_headers: bool,
    /// Per-project settings, keyed by project name (the first segment of a repository name).
    #[serde(default)]
    pub projects: BTreeMap<String, ProjectConfig>,
    /// How registry traffic becomes events.
    #[serde(default)]
    pub events: EventsConfig,
    /// The embedded database.
    #[serde(default)]
    pub store: StoreConfig,
    /// Webhook delivery (names of Harbor's `harbor.yml` where they exist).
    #[serde(default)]
    pub notification: NotificationConfig,
    /// API users besides `admin`.
    #[serde(default)]
    pub users: UsersConfig,
    /// Classic Helm chart repositories (ChartMuseum behind `/chartrepo/…`).
    #[serde(default)]
    pub chartrepo: ChartRepoConfig,
    /// Bearer token of the side endpoint (`/api/v1/events/scan`, `/api/v1/events/quota`) for
    /// scanners and quota tools. The system administrator's Basic credentials work too.
    #[serde(default)]
    pub side_api_token: Option<Secret>,
    /// A file holding `side_api_token` (a mounted secret; one trailing newline is ignored). Read
    /// once at start; set it instead of `side_api_token`, not with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_api_token_file: Option<PathBuf>,
    /// Limits of the side endpoint.
    #[serde(default)]
    pub side: SideConfig,
    /// Project quotas wharf enforces (`projects.<name>.storage_limit`).
    #[serde(default)]
    pub quota: QuotaConfig,
    /// wharf's Harbor-compatible API (`/api/v2.0/…`).
    #[serde(default)]
    pub api: ApiConfig,
}

/// The Harbor-compatible API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Return a webhook target's stored `auth_header` as it is to the callers who may manage
    /// the policy (the system administrator and the project's admins), as Harbor does, so
    /// tools that read a policy back after writing it (terraform) see no change. `false`:
    /// it reads `***` (and `***` sent back keeps the stored value). Never logged either way.
    #[serde(default = "defaults::yes")]
    pub reveal_auth_header: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            reveal_auth_header: true,
        }
    }
}

/// How a multi-platform push (platform manifests by digest, then the index by tag) is reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MultiPlatform {
    /// One event for the whole push: the index's (platform manifests waiting for it within
    /// `events.index_window` are absorbed); a pull of an index and its platform manifest is
    /// one pull event.
    #[default]
    OneEvent,
    /// Harbor's behaviour: every manifest PUT and GET is an event of its own (the platform
    /// manifests' events carry their digest as the tag).
    PerManifest,
}

/// Client connections.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// A new connection must have sent a complete request head (HTTP/1) or opened a request
    /// stream (HTTP/2) within this time of being accepted, else it is closed; also the time
    /// allowed for a TLS handshake and for each later request head once its first byte came.
    #[serde(default = "defaults::header_timeout", with = "duration")]
    pub header_timeout: Duration,
    /// A connection with no request in progress is closed after this long (keep-alive idle
    /// time, as nginx's `keepalive_timeout`).
    #[serde(default = "defaults::idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Most client connections open at once; at the limit wharf stops accepting until one
    /// closes (new connections wait in the kernel's backlog). Lowered at start to what the
    /// open-files limit allows (two descriptors per connection: client and upstream).
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// HTTP/2: a PING is sent after this long without frames from the client; a connection
    /// that does not answer within the same time is closed.
    #[serde(default = "defaults::http2_keep_alive", with = "duration")]
    pub http2_keep_alive: Duration,
    /// Threads that run wharf's tasks: the proxy, the API and UI, the dispatcher (the store's
    /// writers and the log's flushing thread are threads of their own). `auto`: one per CPU
    /// this process may use (its affinity and cgroup quota count).
    #[serde(default)]
    pub worker_threads: WorkerThreads,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_timeout: defaults::header_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_connections: defaults::max_connections(),
            http2_keep_alive: defaults::http2_keep_alive(),
            worker_threads: WorkerThreads::default(),
        }
    }
}

/// `server.worker_threads`: `auto` or a number of threads (at least 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WorkerThreads {
    /// One per CPU this process may use.
    #[default]
    Auto,
    /// This many.
    Count(usize),
}

impl WorkerThreads {
    /// The number of threads to start.
    pub fn resolve(self) -> usize {
        match self {
            WorkerThreads::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
            WorkerThreads::Count(n) => n,
        }
    }
}

impl Serialize for WorkerThreads {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WorkerThreads::Auto => s.serialize_str("auto"),
            WorkerThreads::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for WorkerThreads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            // a negative count is refused by validation, naming the key
            Raw::Count(n) => Ok(WorkerThreads::Count(usize::try_from(n).unwrap_or(0))),
            Raw::Text(t) if t.trim() == "auto" => Ok(WorkerThreads::Auto),
            Raw::Text(t) => t.trim().parse().map(WorkerThreads::Count).map_err(|_| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a number of threads; write auto or a number such as 1"
                ))
            }),
        }
    }
}

/// The side endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SideConfig {
    /// Largest request body accepted (a scan report); larger ones get 413.
    #[serde(default = "defaults::side_max_body", with = "bytesize")]
    pub max_body: u64,
    /// Most vulnerabilities listed in a scan event (the counts are always complete).
    #[serde(default = "defaults::max_vulnerabilities")]
    pub max_vulnerabilities: usize,
}

impl Default for SideConfig {
    fn default() -> Self {
        Self {
            max_body: defaults::side_max_body(),
            max_vulnerabilities: defaults::max_vulnerabilities(),
        }
    }
}

/// Quotas.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Percentage of a project's limit whose crossing emits one QUOTA_WARNING.
    #[serde(default = "defaults::warning_threshold")]
    pub warning_threshold: u8,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            warning_threshold: defaults::warning_threshold(),
        }
    }
}

/// Classic chart repositories.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChartRepoConfig {
    /// Largest chart upload wharf reads to learn the chart's name, version and type
    /// (ChartMuseum's own default limit is 20 MiB). A larger upload is streamed through
    /// untouched and makes no event.
    #[serde(default = "defaults::chart_max_upload", with = "bytesize")]
    pub max_upload_size: u64,
}

impl Default for ChartRepoConfig {
    fn default() -> Self {
        Self {
            max_upload_size: defaults::chart_max_upload(),
        }
    }
}

/// API users.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsersConfig {
    /// An htpasswd file with bcrypt entries (`htpasswd -B`), the format the registry uses.
    /// Users listed in `projects.<name>.admins` are that project's administrators. Re-read
    /// when it changes; while it is missing or unreadable no htpasswd user can log in.
    #[serde(default)]
    pub htpasswd: Option<PathBuf>,
    /// Failed API logins (401 to a request with credentials) one client address may make at
    /// once; then it gets 429 with `Retry-After` until `failed_login_interval` gave it another
    /// attempt. Registry paths are not affected.
    #[serde(default = "defaults::failed_login_burst")]
    pub failed_login_burst: u32,
    /// One more login attempt for a throttled address per this interval.
    #[serde(default = "defaults::failed_login_interval", with = "duration")]
    pub failed_login_interval: Duration,
}

impl Default for UsersConfig {
    fn default() -> Self {
        Self {
            htpasswd: None,
            failed_login_burst: defaults::failed_login_burst(),
            failed_login_interval: defaults::failed_login_interval(),
        }
    }
}

/// Webhook delivery.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// Retries after the first attempt; then the delivery is dead (visible, redeliverable).
    #[serde(default = "defaults::max_retry")]
    pub webhook_job_max_retry: u32,
    /// Seconds one delivery attempt may take.
    #[serde(default = "defaults::http_timeout")]
    pub webhook_job_http_client_timeout: u64,
    /// Time between attempts.
    #[serde(default)]
    pub backoff: crate::dispatch::retry::Backoff,
    /// A `Retry-After` from the target is honoured up to this long.
    #[serde(default = "defaults::retry_after_max", with = "duration")]
    pub retry_after_max: Duration,
    /// Networks (CIDR) webhook targets may resolve to although they are loopback, private,
    /// link-local, CGNAT, multicast or unspecified — e.g. `["10.1.2.0/24"]`. Empty: none.
    #[serde(default)]
    pub allowed_target_networks: Vec<ipnet::IpNet>,
    /// Extra CA certificates (PEM) trusted for HTTPS targets, besides the system roots.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Deliveries in flight at once, over all targets.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Deliveries in flight at once to one target address.
    #[serde(default = "defaults::per_target_concurrency")]
    pub per_target_concurrency: usize,
    /// After this many consecutive failures a target's circuit opens: its deliveries wait
    /// `breaker_cooldown` (doubling up to `breaker_max_cooldown`) without attempts.
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "defaults::breaker_cooldown", with = "duration")]
    pub breaker_cooldown: Duration,
    #[serde(default = "defaults::breaker_max_cooldown", with = "duration")]
    pub breaker_max_cooldown: Duration,
    /// Least time between two messages to one Slack target (Slack's rate limit).
    #[serde(default = "defaults::slack_interval", with = "duration")]
    pub slack_interval: Duration,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        serde_yaml_ng::from_str("{}").unwrap_or_else(|_| unreachable!("all fields have defaults"))
    }
}
/// Events from registry traffic.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Turn events off entirely: wharf is then a plain proxy (used to measure the cost of events).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// A manifest pushed by digest alone (a platform manifest of `skopeo copy --all`) waits this
    /// long for an index that lists it; then it becomes an event of its own. An index that
    /// arrives in time absorbs it (one event per multi-platform push).
    #[serde(default = "defaults::index_window", with = "duration")]
    pub index_window: Duration,
    /// How long wharf remembers that a client resolved a tag (HEAD/GET by tag) or pulled an
    /// index, to report the tag on a following pull by digest and to not count the platform
    /// manifest of an index pull as a second pull.
    #[serde(default = "defaults::attribution_window", with = "duration")]
    pub attribution_window: Duration,
    /// PEM certificates that sign the registry's Bearer tokens (distribution's
    /// `auth.token.rootcertbundle`). When set, the `sub` of a token is trusted only if its
    /// signature verifies (RS256 or ES256); otherwise the operator is `anonymous`. When unset,
    /// `sub` is read without verification (the registry already accepted the token).
    #[serde(default)]
    pub token_cert_bundle: Option<PathBuf>,
    /// Pulls by these users or user agents are not events, in every project.
    #[serde(default)]
    pub ignore_pulls: PullFilter,
    /// `one_event` (the default): one event per multi-platform push or pull; `per_manifest`:
    /// one per manifest, as Harbor.
    #[serde(default)]
    pub multi_platform: MultiPlatform,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            index_window: defaults::index_window(),
            attribution_window: defaults::attribution_window(),
            token_cert_bundle: None,
            ignore_pulls: PullFilter::default(),
            multi_platform: MultiPlatform::OneEvent,
        }
    }
}

/// Whose pulls are not events: glob patterns (`*`, `?`, `[…]`, `{a,b}`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PullFilter {
    /// Operators (user names), e.g. `replicator`.
    #[serde(default)]
    pub users: Vec<String>,
    /// Whole `User-Agent` values, e.g. `Trivy/*` or `harbor-registry-client*`.
    #[serde(default)]
    pub user_agents: Vec<String>,
}

impl PullFilter {
    /// Does the filter match this operator or user agent?
    pub fn matches(&self, operator: &str, user_agent: Option<&str>) -> bool {
        self.users.iter().any(|p| crate::glob::matches(p, operator))
            || user_agent
                .is_some_and(|ua| self.user_agents.iter().any(|p| crate::glob::matches(p, ua)))
    }
}

/// The store: embedded SQLite under `data_dir` (default), or a PostgreSQL database shared by
/// every replica (`url`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://USER[:PASS]@HOST[:PORT]/DB[?sslmode=…]`: keep all state in this PostgreSQL
    /// database, shared by any number of wharf replicas. Absent: the embedded SQLite database
    /// `<data_dir>/wharf.db`. Query parameters: `sslmode` (`disable`, `prefer` — the default —,
    /// `require`, `verify-ca`, `verify-full`), `sslrootcert` (PEM file of the CA to trust),
    /// `application_name`, `connect_timeout` (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<DatabaseUrl>,
    /// File holding the PostgreSQL password (a mounted secret; one trailing newline is
    /// ignored). Wins over a password in `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Most PostgreSQL connections this process opens (writers, readers and the listener for
    /// change notifications).
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// Time allowed to connect to PostgreSQL, and to wait for a free pooled connection.
    #[serde(default = "defaults::store_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// A webhook delivery claimed by a replica is its own for this long; if the replica dies
    /// mid-attempt, another takes the delivery over when the lease has expired. Must be longer
    /// than one attempt (`notification.webhook_job_http_client_timeout`).
    #[serde(default = "defaults::claim_lease", with = "duration")]
    pub claim_lease: Duration,
    /// SQLite only: `normal` (survives a killed process; an OS crash may lose the last
    /// commits, like the registry's own filesystem storage) or `full` (fsync on every group
    /// commit). PostgreSQL commits are as durable as the server's `synchronous_commit`.
    #[serde(default)]
    pub synchronous: crate::store::Synchronous,
    /// Events older than this are removed from the event log, with their finished deliveries
    /// and attempts (deliveries still pending keep their event). `0s` keeps everything.
    #[serde(default = "defaults::retention", with = "duration")]
    pub retention: Duration,
    /// Pull events (`PULL_ARTIFACT`, `DOWNLOAD_CHART`) — most of the event log on a busy
    /// registry — leave it sooner: after this (never later than `retention`), with their finished
    /// deliveries and attempts. `0s`: as long as other events.
    #[serde(default = "defaults::retention_pulls", with = "duration")]
    pub retention_pulls: Duration,
}

impl StoreConfig {
    /// The PostgreSQL password: what `password_file` holds (read now, byte for byte less one
    /// trailing newline), else the one in `url`. Errors name the key, never the password.
    pub fn password(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(path) = &self.password_file {
            return read_secret_file(path).map(Some).map_err(|e| {
                invalid(
                    "store.password_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            });
        }
        match &self.url {
            Some(url) => Ok(url
                .parse()
                .map_err(|reason| invalid("store.url", reason))?
                .password),
            None => Ok(None),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            password_file: None,
            pool_size: defaults::pool_size(),
            connect_timeout: defaults::store_connect_timeout(),
            claim_lease: defaults::claim_lease(),
            synchronous: Default::default(),
            retention: defaults::retention(),
            retention_pulls: defaults::retention_pulls(),
        }
    }
}

/// TLS to PostgreSQL (`sslmode` of `store.url`, libpq's names and meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, certificate not checked (libpq's default).
    Prefer,
    /// TLS required, certificate not checked.
    Require,
    /// TLS required, certificate chain checked against `sslrootcert` (or the system roots).
    VerifyCa,
    /// As `verify-ca`, and the host name must match the certificate.
    VerifyFull,
}

/// A parsed `store.url`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    pub user: String,
    pub password: Option<Secret>,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub application_name: Option<String>,
    pub connect_timeout: Option<Duration>,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

/// A database URL (`store.url`). It may hold a password: never printed as is — `Debug` and
/// serialization (`wharf check-config`) show it with the password as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The URL itself; call only where it is used, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password (if any) replaced by `***`.
    pub fn masked(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            Err(_) => "***".to_string(),
        }
    }

    /// Parse and check the URL; the message of an error names what is wrong, never the
    /// password.
    pub fn parse(&self) -> Result<PgTarget, String> {
        let u =
            url::Url::parse(&self.0).map_err(|e| format!("not a URL ({e}): {}", self.masked()))?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "must start with postgres:// or postgresql:// (got {}://)",
                u.scheme()
            ));
        }
        let host = match u.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err("has no host (postgres://USER@HOST[:PORT]/DB)".into()),
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = decode(u.username());
        if user.is_empty() {
            return Err("has no user (postgres://USER@HOST[:PORT]/DB)".into());
        }
        let password = u.password().map(|p| Secret::new(decode(p)));
        let dbname = decode(u.path().trim_start_matches('/'));
        if dbname.is_empty() || dbname.contains('/') {
            return Err("must name one database (postgres://USER@HOST[:PORT]/DB)".into());
        }
        let mut t = PgTarget {
            user,
            password,
            host,
            port: u.port().unwrap_or(5432),
            dbname,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            application_name: None,
            connect_timeout: None,
        };
        for (k, v) in u.query_pairs() {
            match k.as_ref() {
                "sslmode" => {
                    t.sslmode = match v.as_ref() {
                        "disable" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                            ));
                        }
                    }
                }
                "sslrootcert" => t.sslrootcert = Some(PathBuf::from(v.as_ref())),
                "application_name" => t.application_name = Some(v.into_owned()),
                "connect_timeout" => {
                    let secs: u64 = v
                        .parse()
                        .map_err(|_| format!("connect_timeout={v:?} is not a number of seconds"))?;
                    t.connect_timeout = Some(Duration::from_secs(secs));
                }
                other => {
                    return Err(format!(
                        "unknown parameter {other:?} (known: sslmode, sslrootcert, application_name, connect_timeout)"
                    ));
                }
            }
        }
        Ok(t)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.masked(), f)
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        secret_string(d).map(DatabaseUrl)
    }
}

/// Where requests go.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the OCI/Distribution registry; every `/v2/…` request goes there.
    pub registry: String,
    /// Base URL of ChartMuseum (run with `--depth=1`), for `/chartrepo/…` and `/api/chartrepo/…`.
    #[serde(default)]
    pub chartmuseum: Option<String>,
    /// Time allowed to open a TCP connection to an upstream; past it the client gets 502.
    #[serde(default = "defaults::connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers once the request body has been sent
    /// completely; past it the client gets 504. Uploads themselves are not limited by it.
    #[serde(default = "defaults::response_timeout", with = "duration")]
    pub response_timeout: Duration,
    /// Idle keep-alive connections kept per upstream that no client connection owns (parked
    /// by client connections that ended, and the shared pool's).
    #[serde(default = "defaults::pool_max_idle")]
    pub pool_max_idle: usize,
    /// How long an idle upstream connection is kept (a client connection's own, parked or
    /// pooled).
    #[serde(default = "defaults::pool_idle_timeout", with = "duration")]
    pub pool_idle_timeout: Duration,
    /// PEM file with one or more CA certificates trusted for `https://` upstreams (the registry
    /// and ChartMuseum) in addition to the system's trust store, e.g. the company's own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// PEM file with the client certificate chain (leaf first) wharf presents when an
    /// `https://` upstream asks for one (mutual TLS). Needs `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM file with the private key of `client_cert` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

/// HTTPS for the listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (human readable) or `json` (one object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// Filter in `tracing` syntax, e.g. `info` or `wharf=debug,info`. `RUST_LOG` wins when set.
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// Access-log lines gathered before they are written to standard output (as nginx's
    /// `access_log … buffer=`); every other line is written at once, after them. `0`: every
    /// line written as it is logged.
    #[serde(default = "defaults::log_buffer", with = "bytesize")]
    pub buffer: u64,
    /// Gathered access-log lines are written at least this often (nginx's `flush=`); a killed
    /// process loses at most this much of them.
    #[serde(default = "defaults::log_flush_interval", with = "duration")]
    pub flush_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: defaults::log_level(),
            buffer: defaults::log_buffer(),
            flush_interval: defaults::log_flush_interval(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings of one project.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Public projects are reported as `repo_type: public` / `project_type: Public`.
    #[serde(default)]
    pub public: bool,
    /// Pulls by these users or user agents are not events in this project.
    #[serde(default)]
    pub ignore_pulls: PullFilter,
    /// Users (from `users.htpasswd`) who administer this project's webhooks.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Storage the project's images may use (unique blobs referenced by its manifests), e.g.
    /// `10GiB`. A push past it is refused with 403 DENIED and a QUOTA_EXCEED event.
    #[serde(
        default,
        with = "bytesize::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub storage_limit: Option<u64>,
}

/// A secret string: never printed, never logged. Serializes as `***` (for `check-config`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; call only where it is used, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        secret_string(d).map(Secret)
    }
}

/// A string that may be a secret: anything else is refused without showing the value (serde's
/// own message would print it: "invalid type: integer `12345678`").
fn secret_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Visitor;
    const NOT_TEXT: &str = "must be a string (quote the value in YAML); the value is not shown";
    macro_rules! refuse {
        ($($name:ident: $t:ty),*) => {$(
            fn $name<E: serde::de::Error>(self, _: $t) -> Result<String, E> {
                Err(E::custom(NOT_TEXT))
            }
        )*};
    }
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        refuse!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_i128: i128,
            visit_u128: u128, visit_f64: f64, visit_char: char, visit_bytes: &[u8]);
        fn visit_unit<E: serde::de::Error>(self) -> Result<String, E> {
            Err(E::custom(NOT_TEXT))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<String, E> {
            Err(E::custom(NOT_TEXT))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
            Err(serde::de::Error::custom(NOT_TEXT))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
            Err(serde::de::Error::custom(NOT_TEXT))
        }
        fn visit_enum<A: serde::de::EnumAccess<'de>>(self, _: A) -> Result<String, A::Error> {
            Err(serde::de::Error::custom(NOT_TEXT))
        }
    }
    d.deserialize_any(Visitor)
}

/// Read a secret from a mounted file: its contents byte for byte, less one trailing newline
/// (`\n` or `\r\n`). The contents are never part of an error.
pub fn read_secret_file(path: &Path) -> Result<Secret, std::io::Error> {
    let mut text = std::fs::read_to_string(path)?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Secret(text))
}

mod defaults {
    use super::*;
    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    pub fn data_dir() -> PathBuf {
        PathBuf::from("/var/lib/wharf")
    }
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(30)
    }
    pub fn header_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(75)
    }
    pub fn max_connections() -> usize {
        4096
    }
    pub fn http2_keep_alive() -> Duration {
        Duration::from_secs(30)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn response_timeout() -> Duration {
        Duration::from_secs(120)
    }
    pub fn pool_max_idle() -> usize {
        64
    }
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn log_buffer() -> u64 {
        64 << 10
    }
    pub fn log_flush_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn index_window() -> Duration {
        Duration::from_secs(10)
    }
    pub fn attribution_window() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_retry() -> u32 {
        3
    }
    pub fn http_timeout() -> u64 {
        3
    }
    pub fn retry_after_max() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn max_in_flight() -> usize {
        256
    }
    pub fn per_target_concurrency() -> usize {
        16
    }
    pub fn breaker_failures() -> u32 {
        5
    }
    pub fn breaker_cooldown() -> Duration {
        Duration::from_secs(30)
    }
    pub fn breaker_max_cooldown() -> Duration {
        Duration::from_secs(600)
    }
    pub fn slack_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn chart_max_upload() -> u64 {
        20 << 20
    }
    pub fn side_max_body() -> u64 {
        16 << 20
    }
    pub fn max_vulnerabilities() -> usize {
        100
    }
    pub fn warning_threshold() -> u8 {
        85
    }
    pub fn pool_size() -> usize {
        16
    }
    pub fn store_connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn claim_lease() -> Duration {
        Duration::from_secs(60)
    }
    pub fn retention() -> Duration {
        Duration::from_secs(30 * 24 * 3600)
    }
    pub fn retention_pulls() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    pub fn failed_login_burst() -> u32 {
        10
    }
    pub fn failed_login_interval() -> Duration {
        Duration::from_secs(1)
    }
}

/// Durations written as `30s`, `2m`, `1h 30m` or a bare number of seconds.
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Float(f) if f.is_finite() && f >= 0.0 => Ok(Duration::from_secs_f64(f)),
            Raw::Float(f) => Err(serde::de::Error::custom(format!("{f} is not a duration"))),
            Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a duration ({e}); write e.g. 30s, 2m or a number of seconds"
                ))
            }),
        }
    }
}

/// Byte sizes written as `20MiB`, `10GiB`, `500MB`, `1.5GiB` or a bare number of bytes.
pub mod bytesize {
    use super::*;

    /// Parse a size: a number with an optional unit (B, KB, MB, GB, TB: powers of 1000;
    /// KiB, MiB, GiB, TiB: powers of 1024; case-insensitive, space allowed).
    pub fn parse(text: &str) -> Result<u64, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| {
            format!("{text:?} is not a size; write e.g. 20MiB, 10GiB or a number of bytes")
        })?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "ki" | "kib" => 1024.0,
            "mi" | "mib" => 1024f64.powi(2),
            "gi" | "gib" => 1024f64.powi(3),
            "ti" | "tib" => 1024f64.powi(4),
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                ));
            }
        };
        let v = n * mult;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(format!("{text:?} is out of range"));
        }
        Ok(v.round() as u64)
    }

    /// Format bytes the way Harbor does in quota messages (`2.1 MiB`).
    pub fn human(bytes: u64) -> String {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = bytes as f64;
        let mut i = 0;
        while v >= 1024.0 && i < UNITS.len() - 1 {
            v /= 1024.0;
            i += 1;
        }
        if i == 0 {
            format!("{bytes} B")
        } else {
            format!("{v:.1} {}", UNITS[i])
        }
    }

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(n),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }

    /// For `Option<u64>` fields.
    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(n) => s.serialize_some(n),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] u64);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        #[test]
        fn sizes() {
            assert_eq!(parse("20MiB").unwrap(), 20 << 20);
            assert_eq!(parse("10 GiB").unwrap(), 10 << 30);
            assert_eq!(parse("500MB").unwrap(), 500_000_000);
            assert_eq!(parse("1.5GiB").unwrap(), 3 << 29);
            assert_eq!(parse("1024").unwrap(), 1024);
            assert!(parse("ten").is_err());
            assert!(parse("10 parsecs").is_err());
            assert_eq!(human(2_202_009), "2.1 MiB");
            assert_eq!(human(10 << 20), "10.0 MiB");
            assert_eq!(human(12), "12 B");
        }
    }
}

/// Env var that names the config file; never treated as an override.
pub const CONFIG_ENV: &str = "WHARF_CONFIG";
const ENV_PREFIX: &str = "WHARF_";

/// The largest `log.buffer` accepted.
pub const MAX_LOG_BUFFER: u64 = 16 << 20;
/// The most `server.worker_threads` accepted.
pub const MAX_WORKER_THREADS: usize = 1024;
/// The shortest `admin_password` accepted.
pub const MIN_ADMIN_PASSWORD_CHARS: usize = 12;
/// The shortest `side_api_token` accepted.
pub const MIN_SIDE_API_TOKEN_CHARS: usize = 16;

/// Keys whose env values are taken literally instead of as YAML: secrets (a `#`, quotes, a
/// leading `!!` or all digits are part of the value) and the files holding them.
pub const LITERAL_KEYS: [&str; 6] = [
    "admin_password",
    "admin_password_file",
    "side_api_token",
    "side_api_token_file",
    "store.url",
    "store.password_file",
];

/// Is `var=value` one of the variables Kubernetes injects into every pod of a namespace for a
/// Service named `wharf` or `wharf-<x>` (docker-links style)? For a Service `<NAME>` with a port
/// 8080/TCP named `http`: `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`,
/// `<NAME>_SERVICE_PORT_HTTP`, `<NAME>_PORT=tcp://…`, `<NAME>_PORT_8080_TCP=tcp://…`,
/// `<NAME>_PORT_8080_TCP_PROTO`, `…_PORT`, `…_ADDR` (the name upper-cased, `-` as `_`).
/// A config override always has `__` between levels and no such shape: no key ends in
/// `_service_host`, `_service_port…` or `_port` (a unit test keeps it so).
pub fn is_kubernetes_service_link(var: &str, value: &str) -> bool {
    let Some(rest) = var.strip_prefix("WHARF") else {
        return false;
    };
    if !rest.starts_with('_')
        || var.contains("__")
        || !rest
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return false;
    }
    let is_url = ["tcp://", "udp://", "sctp://"]
        .iter()
        .any(|p| value.starts_with(p));
    // `<NAME>` is WHARF or WHARF_<x>: the suffix may start at any `_`
    rest.match_indices('_').any(|(i, _)| {
        let suffix = &rest[i..];
        if suffix == "_SERVICE_HOST" || suffix == "_SERVICE_PORT" {
            return true;
        }
        if let Some(port_name) = suffix.strip_prefix("_SERVICE_PORT_") {
            return !port_name.is_empty();
        }
        if suffix == "_PORT" {
            return is_url;
        }
        let Some(tail) = suffix.strip_prefix("_PORT_") else {
            return false;
        };
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        match tail[digits..]
            .strip_prefix("_TCP")
            .or_else(|| tail[digits..].strip_prefix("_UDP"))
            .or_else(|| tail[digits..].strip_prefix("_SCTP"))
        {
            Some("") => is_url,
            Some("_PROTO") | Some("_PORT") | Some("_ADDR") => true,
            _ => false,
        }
    })
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
            self.admin_password = read_secret_file(path).map_err(|e| {
                invalid(
                    "admin_password_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
        }
        if let Some(path) = &self.side_api_token_file {
            if self.side_api_token.is_some() {
                return Err(invalid(
                    "side_api_token_file",
                    "set side_api_token or side_api_token_file, not both",
                ));
            }
            self.side_api_token = Some(read_secret_file(path).map_err(|e| {
                invalid(
                    "side_api_token_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?);
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
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
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
                if !path.is_file() {
                    return Err(invalid(
                        key,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
            crate::server::tls_acceptor(&tls.cert, &tls.key).map_err(|e| match e {
                crate::server::ServerError::Pem(e) => ConfigError::Pem(e),
                other => invalid("tls.key", other.to_string()),
            })?;
        }
        if let Some(url) = &self.store.url {
            let target = url.parse().map_err(|reason| invalid("store.url", reason))?;
            if let Some(ca) = &target.sslrootcert
                && !ca.is_file()
            {
                return Err(invalid(
                    "store.url",
                    format!("sslrootcert {} is not a readable file", ca.display()),
                ));
            }
            if let Some(ca) = &target.sslrootcert {
                crate::pem::add_roots(
                    &mut rustls::RootCertStore::empty(),
                    crate::store::pg::SSLROOTCERT_KEY,
                    ca,
                )?;
            }
        } else if self.store.password_file.is_some() {
            return Err(invalid(
                "store.password_file",
                "is only used with store.url (PostgreSQL)",
            ));
        }
        if let Some(p) = &self.store.password_file
            && !p.is_file()
        {
            return Err(invalid(
                "store.password_file",
                format!("{} is not a readable file", p.display()),
            ));
        }
        if self.store.pool_size < 4 {
            return Err(invalid(
                "store.pool_size",
                "must be at least 4 (a writer, a reader, the dispatcher and the change listener)",
            ));
        }
        if self.store.connect_timeout.is_zero() {
            return Err(invalid("store.connect_timeout", "must be greater than 0"));
        }
        let attempt = Duration::from_secs(self.notification.webhook_job_http_client_timeout);
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
        if n.max_in_flight == 0 {
            return Err(invalid("notification.max_in_flight", "must be at least 1"));
        }
        if n.per_target_concurrency == 0 {
            return Err(invalid(
                "notification.per_target_concurrency",
                "must be at least 1",
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
        if let Some(p) = &n.ca_bundle
            && !p.is_file()
        {
            return Err(invalid(
                "notification.ca_bundle",
                format!("{} is not a readable file", p.display()),
            ));
        }
        if let Some(p) = &n.ca_bundle {
            crate::pem::add_roots(
                &mut rustls::RootCertStore::empty(),
                "notification.ca_bundle",
                p,
            )?;
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
        if let Some(p) = &self.users.htpasswd
            && !p.is_file()
        {
            return Err(invalid(
                "users.htpasswd",
                format!("{} is not a readable file", p.display()),
            ));
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
                crate::glob::check_all(&key, patterns).map_err(|reason| {
                    // the message starts with the key and index already
                    match reason.split_once(": ") {
                        Some((k, r)) => invalid(k, r),
                        None => invalid(&key, reason),
                    }
                })?;
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

/// The key path of an override: `WHARF_A__B_C` → `["a", "b_c"]`.
fn override_path(var: &str) -> Vec<String> {
    var.get(ENV_PREFIX.len()..)
        .unwrap_or_default()
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

/// Apply one `WHARF_A__B_C=value` override: the key path is `a.b_c`. The values of
/// [`LITERAL_KEYS`] are taken as they are, others are read as YAML scalars.
fn apply_override(
    root: &mut serde_yaml_ng::Value,
    var: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    use serde_yaml_ng::Value;
    let env_err = |reason: String| ConfigError::Env {
        var: var.to_string(),
        reason,
    };
    let path = override_path(var);
    if path.iter().any(|p| p.is_empty()) {
        return Err(env_err("empty key segment".into()));
    }
    let literal = LITERAL_KEYS.contains(&path.join(".").as_str());
    let parsed: Value = if raw.is_empty() || literal {
        Value::String(raw.to_string())
    } else {
        serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
    };
    let mut node = root;
    for (i, seg) in path.iter().enumerate() {
        let map = match node {
            Value::Mapping(m) => m,
            Value::Null => {
                *node = Value::Mapping(Default::default());
                match node {
                    Value::Mapping(m) => m,
                    _ => unreachable!("just assigned a mapping"),
                }
            }
            _ => {
                return Err(env_err(format!("{} is not a section", path[..i].join("."))));
            }
        };
        let key = Value::String(seg.clone());
        if i + 1 == path.len() {
            map.insert(key, parsed);
            return Ok(());
        }
        node = map.entry(key).or_insert(Value::Null);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "s3cret-password";
    const MIN: &str =
        "upstream: {registry: \"http://127.0.0.1:5000\"}\nadmin_password: s3cret-password\n";

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(
            text,
            Path::new("test.yaml"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load(MIN, &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.external_base(), "http://127.0.0.1:8080");
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn store_url_is_checked_and_its_password_masked() {
        let c = load(
            MIN,
            &[(
                "WHARF_STORE__URL",
                "postgres://wharf:s3cr%40t@db.internal:6432/wharf?sslmode=require&application_name=w1",
            )],
        )
        .unwrap();
        let t = c.store.url.as_ref().unwrap().parse().unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port, t.dbname.as_str()),
            ("wharf", "db.internal", 6432, "wharf")
        );
        assert_eq!(t.password.as_ref().map(Secret::expose), Some("s3cr@t"));
        assert_eq!(t.sslmode, SslMode::Require);
        assert_eq!(t.application_name.as_deref(), Some("w1"));
        let shown = c.to_masked_yaml();
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(
            shown.contains("postgres://wharf:***@db.internal:6432/wharf"),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("s3cr"));
        for (url, why) in [
            ("mysql://u@h/db", "postgres://"),
            ("postgres://h/db", "no user"),
            ("postgres://u@/db", "host"),
            ("postgres://u@h", "one database"),
            ("postgres://u@h/db?sslmode=maybe", "sslmode"),
            ("postgres://u@h/db?pool=3", "unknown parameter"),
            ("postgres://u:hunter2@h:99999/db", "not a URL"),
            ("not a url", "not a URL"),
        ] {
            let err = load(&format!("{MIN}store: {{url: \"{url}\"}}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("store.url: "), "{url}: {err}");
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = load(
            &format!("{MIN}store: {{password_file: /nonexistent}}\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("store.password_file"), "{err}");
        let err = load(&format!("{MIN}store: {{claim_lease: 2s}}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("store.claim_lease"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path() {
        let err = load(&format!("{MIN}upstream2: x\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream2"), "{err}");
        let err = load(
            "upstream: {registry: \"http://x\", regsitry: 1}\nadmin_password: s3cret-password\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("upstream"), "{err}");
        assert!(err.contains("regsitry"), "{err}");
    }

    #[test]
    fn env_overrides_nested_keys_and_scalars() {
        let c = load(
            MIN,
            &[
                ("WHARF_UPSTREAM__REGISTRY", "http://10.0.0.1:5000"),
                ("WHARF_SHUTDOWN_GRACE", "5s"),
                ("WHARF_LOG__FORMAT", "json"),
                ("WHARF_PROJECTS__PRJ__PUBLIC", "true"),
                ("WHARF_CONFIG", "/ignored.yaml"),
            ],
        )
        .unwrap();
        assert_eq!(c.upstream.registry, "http://10.0.0.1:5000");
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(c.project("prj").public);
    }

    #[test]
    fn env_override_with_unknown_key_names_it() {
        let err = load(MIN, &[("WHARF_NOPE", "1")]).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let err = load(
            "upstream: {registry: \"ftp://x\"}\nadmin_password: s3cret-password\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("upstream.registry:"), "{err}");
        let err = load(
            "upstream: {registry: \"http://x\"}\nadmin_password: \"\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("admin_password:"), "{err}");
        let err = load(&format!("{MIN}shutdown_grace: soon\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("shutdown_grace:"), "{err}");
        let err = load("admin_password: s3cret-password\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream"), "{err}");
        let err = load(&format!("{MIN}tls: {{cert: /nonexistent, key: /x}}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("tls.cert:"), "{err}");
    }

    #[test]
    fn worker_threads_are_auto_or_a_count() {
        let c = load(MIN, &[]).unwrap();
        assert_eq!(c.server.worker_threads, WorkerThreads::Auto);
        assert!(c.server.worker_threads.resolve() >= 1);
        let c = load(&format!("{MIN}server: {{worker_threads: 1}}\n"), &[]).unwrap();
        assert_eq!(c.server.worker_threads, WorkerThreads::Count(1));
        assert_eq!(c.server.worker_threads.resolve(), 1);
        let c = load(&format!("{MIN}server: {{worker_threads: auto}}\n"), &[]).unwrap();
        assert_eq!(c.server.worker_threads, WorkerThreads::Auto);
        let c = load(MIN, &[("WHARF_SERVER__WORKER_THREADS", "3")]).unwrap();
        assert_eq!(c.server.worker_threads, WorkerThreads::Count(3));
        let c = load(MIN, &[("WHARF_SERVER__WORKER_THREADS", "auto")]).unwrap();
        assert_eq!(c.server.worker_threads, WorkerThreads::Auto);
        for bad in ["0", "1025", "many", "-1"] {
            let err = load(&format!("{MIN}server: {{worker_threads: {bad}}}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("server.worker_threads"), "{bad}: {err}");
        }
        // shown as written by check-config
        let shown = serde_yaml_ng::to_string(&load(MIN, &[]).unwrap().server).unwrap();
        assert!(shown.contains("worker_threads: auto"), "{shown}");
    }

    #[test]
    fn pull_filter_patterns_are_checked() {
        let err = load(
            &format!("{MIN}events: {{ignore_pulls: {{user_agents: [\"Trivy/*\", \"[\"]}}}}\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("events.ignore_pulls.user_agents[1]: \"[\" is not a valid pattern"),
            "{err}"
        );
        let err = load(
            &format!("{MIN}projects: {{prj: {{ignore_pulls: {{users: [\"{{a,b\"]}}}}}}\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("projects.prj.ignore_pulls.users[0]: "),
            "{err}"
        );
        // a pattern whose braces expand to 128 patterns: refused, it would slow every pull
        let err = load(
            &format!(
                "{MIN}events: {{ignore_pulls: {{users: [\"{}\"]}}}}\n",
                "{a,b}".repeat(7)
            ),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("events.ignore_pulls.users[0]: ")
                && err.contains("the braces expand to more than 64 alternatives"),
            "{err}"
        );
    }

    #[test]
    fn harbor_api_keys_default_to_harbors_behaviour_and_name_themselves() {
        let c = load(MIN, &[]).unwrap();
        assert!(c.api.reveal_auth_header);
        assert_eq!(c.events.multi_platform, MultiPlatform::OneEvent);
        let c = load(
            &format!("{MIN}api: {{reveal_auth_header: false}}\nevents: {{multi_platform: per_manifest}}\n"),
            &[],
        )
        .unwrap();
        assert!(!c.api.reveal_auth_header);
        assert_eq!(c.events.multi_platform, MultiPlatform::PerManifest);
        let err = load(&format!("{MIN}events: {{multi_platform: bogus}}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("events.multi_platform:"), "{err}");
        let err = load(&format!("{MIN}api: {{reveal_auth_header: maybe}}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("api.reveal_auth_header:"), "{err}");
        let err = load(&format!("{MIN}api: {{reveal: true}}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("api.reveal:"), "{err}");
    }

    #[test]
    fn quotas_need_events() {
        let err = load(
            &format!(
                "{MIN}events: {{enabled: false}}\nprojects: {{prj: {{storage_limit: 10GiB}}}}\n"
            ),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("projects.prj.storage_limit:"), "{err}");
        let c = load(
            &format!("{MIN}projects: {{prj: {{storage_limit: 10GiB}}}}\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.project("prj").storage_limit, Some(10 << 30));
        assert_eq!(c.store.retention, Duration::from_secs(30 * 86400));
        assert_eq!(c.store.retention_pulls, Duration::from_secs(7 * 86400));
        let c = load(MIN, &[("WHARF_STORE__RETENTION_PULLS", "2d")]).unwrap();
        assert_eq!(c.store.retention_pulls, Duration::from_secs(2 * 86400));
    }

    #[test]
    fn secrets_are_masked() {
        let c = load(MIN, &[]).unwrap();
        let printed = c.to_masked_yaml();
        assert!(printed.contains("admin_password: '***'"), "{printed}");
        assert!(!format!("{c:?}").contains(PW));
    }

    // Hardening 5 ---------------------------------------------------------------------------

    #[test]
    fn env_values_of_secret_keys_are_taken_literally() {
        for secret in [
            "S3cret #tail-of-it",
            "\"quoted-password\"",
            "!!str not-a-tag-x",
            "123456789012345",
            "'single' & {braces}: [x]",
            " leading and trailing ",
        ] {
            let c = load(
                MIN,
                &[
                    ("WHARF_ADMIN_PASSWORD", secret),
                    ("WHARF_SIDE_API_TOKEN", &format!("{secret}{secret}")),
                    (
                        "WHARF_STORE__URL",
                        &format!(
                            "postgres://u:{}@db/w",
                            percent_encoding::utf8_percent_encode(
                                secret,
                                percent_encoding::NON_ALPHANUMERIC
                            )
                        ),
                    ),
                ],
            )
            .unwrap_or_else(|e| panic!("{secret:?}: {e}"));
            assert_eq!(
                c.store.password().unwrap().as_ref().map(Secret::expose),
                Some(secret)
            );
            assert_eq!(c.admin_password.expose(), secret);
            assert_eq!(
                c.side_api_token.as_ref().map(Secret::expose),
                Some(format!("{secret}{secret}").as_str())
            );
        }
        // other keys are still YAML scalars
        let c = load(MIN, &[("WHARF_SHUTDOWN_GRACE", "7")]).unwrap();
        assert_eq!(c.shutdown_grace, Duration::from_secs(7));
    }

    #[test]
    fn secrets_are_never_part_of_an_error() {
        // a number where a secret belongs: refused without its value
        for text in [
            "upstream: {registry: \"http://x\"}\nadmin_password: 918273645546372819\n".to_string(),
            format!("{MIN}side_api_token: 918273645546372819\n"),
            format!("{MIN}store: {{url: 918273645546372819}}\n"),
            format!("{MIN}side_api_token: [918273645546372819]\n"),
        ] {
            let err = load(&text, &[]).unwrap_err().to_string();
            assert!(!err.contains("918273645546372819"), "{err}");
            assert!(err.contains("must be a string"), "{err}");
        }
        for (var, value) in [
            ("WHARF_ADMIN_PASSWORD", "9182736"),
            ("WHARF_SIDE_API_TOKEN", "9182736"),
        ] {
            let err = load(MIN, &[(var, value)]).unwrap_err().to_string();
            assert!(!err.contains(value), "{err}");
            assert!(err.contains("at least"), "{err}");
        }
    }

    #[test]
    fn admin_password_has_a_minimum_length() {
        let err = load(
            "upstream: {registry: \"http://x\"}\nadmin_password: elevenchars\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "admin_password: must be at least 12 characters");
        // characters, not bytes: 12 × "ä" is long enough
        let c = load(MIN, &[("WHARF_ADMIN_PASSWORD", &"ä".repeat(12))]).unwrap();
        assert_eq!(c.admin_password.expose().chars().count(), 12);
        let err = load(MIN, &[("WHARF_ADMIN_PASSWORD", &"ä".repeat(11))])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("admin_password:"), "{err}");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("admin");
        std::fs::write(&pw, "from-a-file #1 \"x\"\n").unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "side-token-from-a-file\r\n").unwrap();
        let pg = dir.path().join("pg");
        std::fs::write(&pg, "pg password\n\n").unwrap();
        let text = format!(
            "upstream: {{registry: \"http://x\"}}\nadmin_password_file: {}\nside_api_token_file: {}\nstore: {{url: \"postgres://u:inurl@h/db\", password_file: {}}}\n",
            pw.display(),
            token.display(),
            pg.display()
        );
        let c = load(&text, &[]).unwrap();
        assert_eq!(c.admin_password.expose(), "from-a-file #1 \"x\"");
        assert_eq!(
            c.side_api_token.as_ref().map(Secret::expose),
            Some("side-token-from-a-file")
        );
        // one trailing newline is dropped, not more
        assert_eq!(
            c.store.password().unwrap().as_ref().map(Secret::expose),
            Some("pg password\n")
        );
        let shown = c.to_masked_yaml();
        assert!(!shown.contains("from-a-file"), "{shown}");
        // the file names may come from env too, literally
        let c = load(
            "upstream: {registry: \"http://x\"}\n",
            &[("WHARF_ADMIN_PASSWORD_FILE", pw.to_str().unwrap())],
        )
        .unwrap();
        assert_eq!(c.admin_password.expose(), "from-a-file #1 \"x\"");
        // not both; a missing file names the key; a short password in a file is refused
        let err = load(
            &format!("{MIN}admin_password_file: {}\n", pw.display()),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("admin_password_file: "), "{err}");
        let err = load(
            "upstream: {registry: \"http://x\"}\nadmin_password_file: /nonexistent/pw\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("admin_password_file: cannot read /nonexistent/pw"),
            "{err}"
        );
        std::fs::write(&pw, "short\n").unwrap();
        let err = load(
            &format!(
                "upstream: {{registry: \"http://x\"}}\nadmin_password_file: {}\n",
                pw.display()
            ),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("admin_password: must be at least"), "{err}");
        assert!(!err.contains("short"), "{err}");
        let err = load(
            &format!(
                "{MIN}side_api_token: side-token-0123456789\nside_api_token_file: {}\n",
                token.display()
            ),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("side_api_token_file: "), "{err}");
    }

    // Hardening 6 ---------------------------------------------------------------------------

    #[test]
    fn kubernetes_service_links_are_ignored() {
        let links = [
            ("WHARF_PORT", "tcp://10.96.0.12:8080"),
            ("WHARF_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
            ("WHARF_PORT_8080_TCP_PROTO", "tcp"),
            ("WHARF_PORT_8080_TCP_PORT", "8080"),
            ("WHARF_PORT_8080_TCP_ADDR", "10.96.0.12"),
            ("WHARF_SERVICE_HOST", "10.96.0.12"),
            ("WHARF_SERVICE_PORT", "8080"),
            ("WHARF_SERVICE_PORT_HTTP", "8080"),
            // a Service named wharf-postgresql (a Helm release's database)
            ("WHARF_POSTGRESQL_SERVICE_HOST", "10.96.0.13"),
            ("WHARF_POSTGRESQL_SERVICE_PORT", "5432"),
            ("WHARF_POSTGRESQL_PORT", "tcp://10.96.0.13:5432"),
            ("WHARF_POSTGRESQL_PORT_5432_TCP", "tcp://10.96.0.13:5432"),
            ("WHARF_POSTGRESQL_PORT_5432_TCP_ADDR", "10.96.0.13"),
            ("WHARF_METRICS_PORT_9090_UDP_PROTO", "udp"),
            ("WHARF_X_PORT_53_SCTP", "sctp://10.0.0.1:53"),
        ];
        let env: Vec<(&str, &str)> = links
            .iter()
            .copied()
            .chain([("WHARF_LOG__FORMAT", "json")])
            .collect();
        let c = load(MIN, &env).unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        for (var, value) in links {
            assert!(is_kubernetes_service_link(var, value), "{var}");
        }
        // other unknown WHARF_* variables still fail, naming the variable
        for (var, value) in [
            ("WHARF_PORT", "8080"),
            ("WHARF_NOPE", "1"),
            ("WHARF_PORT_HTTP", "tcp://x:1"),
            ("WHARF_SERVICE_HOSTS", "x"),
            ("WHARF_SERVER__PORT_80_TCP_ADDR", "x"),
            ("WHARF_SERVER__SERVICE_HOST", "x"),
        ] {
            assert!(!is_kubernetes_service_link(var, value), "{var}");
            let err = load(MIN, &[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{var}: {err}");
        }
    }

    #[test]
    fn no_config_key_looks_like_a_service_link() {
        // keys shaped like a service link would be ignored when set from env
        fn keys(v: &serde_yaml_ng::Value, prefix: &str, out: &mut Vec<String>) {
            if let serde_yaml_ng::Value::Mapping(m) = v {
                for (k, v) in m {
                    let k = k.as_str().unwrap_or_default();
                    let path = if prefix.is_empty() {
                        k.to_string()
                    } else {
                        format!("{prefix}__{k}")
                    };
                    out.push(path.clone());
                    if k != "projects" {
                        keys(v, &path, out);
                    }
                }
            }
        }
        let c = load(include_str!("../config/wharf.example.yaml"), &[]).unwrap();
        let mut all = Vec::new();
        keys(&serde_yaml_ng::to_value(&c).unwrap(), "", &mut all);
        assert!(all.len() > 40, "{all:?}");
        for k in all {
            let var = format!("WHARF_{}", k.to_ascii_uppercase());
            assert!(
                !is_kubernetes_service_link(&var, "tcp://10.0.0.1:1"),
                "{var} would be ignored"
            );
        }
    }

    #[test]
    fn upstream_tls_files_are_checked_naming_the_key() {
        let f = crate::pem::TestFiles::new();
        let ca = f.write("ca.pem", &format!("{0}{0}", f.cert_pem));
        let ca = ca.display().to_string();
        let key_pem = f.key.display().to_string();
        let other_pem = f.other_key.display().to_string();
        let junk = f.junk.display().to_string();
        let up = |extra: &str| {
            format!(
                "upstream: {{registry: \"https://127.0.0.1:5000\", {extra}}}\nadmin_password: a-long-password\n"
            )
        };
        let c = load(
            &up(&format!(
                "ca_bundle: \"{ca}\", client_cert: \"{ca}\", client_key: \"{key_pem}\""
            )),
            &[],
        )
        .unwrap();
        assert_eq!(c.upstream.ca_bundle.as_deref(), Some(Path::new(&ca)));
        assert!(c.to_masked_yaml().contains("ca_bundle:"));
        let min = load(MIN, &[]).unwrap();
        assert!(
            !min.to_masked_yaml().contains("client_cert"),
            "unset keys not printed"
        );
        for (extra, key, why) in [
            (
                "ca_bundle: /nonexistent/ca.pem",
                "upstream.ca_bundle",
                "/nonexistent/ca.pem",
            ),
            (
                &format!("ca_bundle: \"{junk}\""),
                "upstream.ca_bundle",
                "no certificate",
            ),
            (
                &format!("client_cert: \"{ca}\""),
                "upstream.client_key",
                "client_cert",
            ),
            (
                &format!("client_key: \"{key_pem}\""),
                "upstream.client_cert",
                "client_key",
            ),
            (
                &format!("client_cert: \"{ca}\", client_key: \"{ca}\""),
                "upstream.client_key",
                "no private key",
            ),
            (
                &format!("client_cert: \"{ca}\", client_key: \"{other_pem}\""),
                "upstream.client_key",
                "",
            ),
            (
                &format!("client_cert: \"{junk}\", client_key: \"{key_pem}\""),
                "upstream.client_cert",
                "no certificate",
            ),
        ] {
            let err = load(&up(extra), &[]).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{key}: ")), "{extra}: {err}");
            assert!(err.contains(why), "{extra}: {err}");
        }
    }

    /// The listener's files, the webhook client's CA bundle and PostgreSQL's `sslrootcert` are
    /// read at validation (check-config too), not first when wharf starts serving.
    #[test]
    fn tls_files_are_checked_naming_the_key() {
        let f = crate::pem::TestFiles::new();
        let path = |p: &std::path::Path| p.display().to_string();
        let (cert, key, other, junk) = (
            path(&f.cert),
            path(&f.key),
            path(&f.other_key),
            path(&f.junk),
        );
        let pg = |root: &str| {
            format!(
                "store: {{url: \"postgres://w@127.0.0.1/w?sslmode=verify-full&sslrootcert={root}\"}}"
            )
        };
        for ok in [
            format!("tls: {{cert: \"{cert}\", key: \"{key}\"}}"),
            format!("notification: {{ca_bundle: \"{cert}\"}}"),
            format!("events: {{token_cert_bundle: \"{cert}\"}}"),
            pg(&cert),
        ] {
            load(&format!("{MIN}{ok}\n"), &[]).unwrap();
        }
        for (extra, key, why) in [
            (
                format!("tls: {{cert: \"{junk}\", key: \"{key}\"}}"),
                "tls.cert",
                "no certificate",
            ),
            (
                format!("tls: {{cert: \"{cert}\", key: \"{cert}\"}}"),
                "tls.key",
                "no private key",
            ),
            (
                format!("tls: {{cert: \"{cert}\", key: \"{other}\"}}"),
                "tls.key",
                "do not fit",
            ),
            (
                format!("notification: {{ca_bundle: \"{junk}\"}}"),
                "notification.ca_bundle",
                "no certificate",
            ),
            (pg(&junk), "store.url", "no certificate"),
            (
                format!("events: {{token_cert_bundle: \"{junk}\"}}"),
                "events.token_cert_bundle",
                "no certificate",
            ),
        ] {
            let err = load(&format!("{MIN}{extra}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(key), "{extra}: {err}");
            assert!(err.contains(why), "{extra}: {err}");
        }
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../config/wharf.example.yaml");
        let c = load(text, &[]).unwrap();
        assert_eq!(c.external_host(), "registry.example.com");
    }
}
