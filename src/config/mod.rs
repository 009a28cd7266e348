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
//!
//! This file is the configuration's shape (every section's struct, its defaults); `load`:
//! loading and validation; `env`: the overrides; [`duration`] and [`bytesize`]: the units.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod bytesize;
pub mod duration;
mod env;
mod load;
pub use env::is_kubernetes_service_link;

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
    /// The file of a secret (`admin_password_file`, `side_api_token_file`,
    /// `store.password_file`) cannot be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    SecretFile {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `tls.cert` and `tls.key` do not make a TLS server (the key names which one to look at).
    #[error("{key}: {detail}")]
    Tls {
        key: &'static str,
        detail: String,
        #[source]
        source: Box<crate::server::ServerError>,
    },
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
    /// open-files limit allows (two descriptors per connection: client and upstream). 1 to
    /// 1,048,576.
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
    /// Seconds one delivery attempt may take (1 to 3600).
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
    /// Deliveries in flight at once, over all targets (1 to 65,536).
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Deliveries in flight at once to one target address (1 to 65,536).
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
    /// `application_name`, `connect_timeout` (seconds, 1–3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<DatabaseUrl>,
    /// File holding the PostgreSQL password (a mounted secret; one trailing newline is
    /// ignored). Wins over a password in `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Most PostgreSQL connections this process opens (writers, readers and the listener for
    /// change notifications): 4 to 1,000.
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
    /// Longest a registry request (a push's quota check and event commit, a delete's or chart
    /// operation's lookups) waits for the database before going on without it; on PostgreSQL
    /// also the server's `statement_timeout` of wharf's connections (a statement stuck on a
    /// lock fails), and, plus `connect_timeout`, the longest wharf waits for any answer before
    /// dropping the connection (a server or network that stopped answering). `0s`: no limit.
    /// Schema migrations, `wharf store copy` and `wharf quota rescan` run without it.
    #[serde(default = "defaults::statement_timeout", with = "duration")]
    pub statement_timeout: Duration,
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
            return read_secret_file(path)
                .map(Some)
                .map_err(|source| ConfigError::SecretFile {
                    key: "store.password_file",
                    path: path.clone(),
                    source,
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
            statement_timeout: defaults::statement_timeout(),
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
    /// TLS required, certificate not checked — unless `sslrootcert` is given: then as
    /// `verify-ca` (libpq's meaning).
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
                    // (0, libpq's "no limit", would here be no time at all: every connection
                    // refused; and a huge value overflowed the answer timeout)
                    if !(1..=3600).contains(&secs) {
                        return Err(format!(
                            "connect_timeout={secs} is not between 1 and 3600 seconds"
                        ));
                    }
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
    pub fn statement_timeout() -> Duration {
        Duration::from_secs(30)
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

#[cfg(test)]
mod tests;
