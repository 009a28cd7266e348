//! App: everything a running wharf holds, built once from the config.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::api::auth::Users;
use crate::api::throttle::LoginThrottle;
use crate::config::Config;
use crate::dispatch::client::{ClientError, Sender};
use crate::dispatch::guard::Guard;
use crate::events::operator::TokenVerifier;
use crate::events::sink::Sink;
use crate::forward::{ForwardError, Upstream};
use crate::metrics::Metrics;
use crate::observe::recent::Recent;
use crate::store::{Store, StoreError};

/// Errors building the app from a validated config.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("upstream: {0}")]
    Upstream(#[from] ForwardError),
    #[error("{key}: {source}")]
    Store {
        /// The config key that names the store (`store.url`, or `data_dir`).
        key: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    TokenCerts(#[from] crate::events::operator::TokenCertError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Shared state of one wharf process.
pub struct App {
    pub config: Arc<Config>,
    /// The registry every `/v2` request goes to.
    pub registry: Upstream,
    /// ChartMuseum, when configured.
    pub chartmuseum: Option<Upstream>,
    /// The store (embedded SQLite, or PostgreSQL shared by replicas).
    pub store: Store,
    /// Where events go.
    pub events: Sink,
    /// Per-client memory for tag attribution and pull de-duplication.
    pub recent: Recent,
    /// Parsed manifests by digest.
    pub facts: crate::observe::manifest::FactsCache,
    /// Blob sizes the registry reported, by digest (quota).
    pub blob_sizes: crate::quota::BlobSizes,
    /// Verifies Bearer tokens when `events.token_cert_bundle` is set.
    pub token_verifier: Option<TokenVerifier>,
    /// wharf's own API (axum).
    pub api: axum::Router,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// API users from `users.htpasswd`.
    pub users: Arc<Users>,
    /// Failed API logins per client address.
    pub login_throttle: LoginThrottle,
    /// The webhook HTTP client (also used by the test endpoint).
    pub sender: Arc<Sender>,
    /// The system switch `notification_enable`, cached (the database holds it), with the
    /// policy version it was taken at ([`NotificationSwitch`]).
    pub notification_switch: Arc<NotificationSwitch>,
    /// [`Config::external_host`], computed once: every event's resource URL starts with it.
    pub external_host: String,
    /// Where access-log lines go ([`crate::accesslog`]).
    pub access_log: crate::accesslog::Sink,
}

/// The system switch `notification_enable` as this process knows it (the database holds it):
/// the flag its readers load, and the policy version it was read or written at — so that a
/// value read at an older version (the policy watch's read racing a change made through this
/// replica's API) never replaces a newer one.
pub struct NotificationSwitch {
    on: Arc<AtomicBool>,
    at: std::sync::Mutex<Option<i64>>,
}

impl Default for NotificationSwitch {
    /// On (the default of `notification_enable`), no version yet.
    fn default() -> Self {
        Self {
            on: Arc::new(AtomicBool::new(true)),
            at: std::sync::Mutex::new(None),
        }
    }
}

impl NotificationSwitch {
    /// Take `on`, read or written at policy version `version`, unless a later version's value
    /// was taken already. Returns the value it replaced, when taken.
    pub fn take(&self, version: i64, on: bool) -> Option<bool> {
        let mut at = self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if at.is_some_and(|a| version < a) {
            return None;
        }
        *at = Some(version);
        Some(self.on.swap(on, std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether notifications are on.
    pub fn is_on(&self) -> bool {
        self.on.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The flag itself, for a reader that only loads it (the dispatcher).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.on.clone()
    }

    /// The database's policy version went back (it lost its latest commits): the next value
    /// is taken whatever its version.
    pub fn forget_version(&self) {
        *self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

impl App {
    /// The handles quota work uses ([`crate::quota`]).
    pub fn quota(&self) -> crate::quota::Quota<'_> {
        crate::quota::Quota {
            store: &self.store,
            registry: &self.registry,
            blob_sizes: &self.blob_sizes,
            projects: &self.config.projects,
            settings: &self.config.quota,
            lapse: crate::quota::reservation_lapse(
                self.config.upstream.response_timeout,
                self.config.store.statement_timeout,
            ),
        }
    }

    /// Build the app: upstream clients, database, API router.
    pub async fn build(
        config: Config,
        access_log: crate::accesslog::Sink,
    ) -> Result<Arc<App>, AppError> {
        let config = Arc::new(config);
        let trust = config.trust_forwarded_headers;
        let registry = Upstream::new(
            "registry",
            &config.upstream.registry,
            &config.upstream,
            trust,
        )?;
        let chartmuseum = config
            .upstream
            .chartmuseum
            .as_deref()
            .map(|url| Upstream::new("chartmuseum", url, &config.upstream, trust))
            .transpose()?;
        let token_verifier = config
            .events
            .token_cert_bundle
            .as_deref()
            .map(TokenVerifier::from_pem_file)
            .transpose()
            .map_err(AppError::TokenCerts)?;
        let store = Store::open(&config.store, &config.data_dir)
            .await
            .map_err(|source| AppError::Store {
                key: match &config.store.url {
                    Some(url) => format!("store.url ({})", url.masked()),
                    None => format!("data_dir ({})", config.data_dir.display()),
                },
                source,
            })?;
        let metrics = Arc::new(Metrics::new());
        let events = Sink::new(store.clone(), metrics.clone());
        let guard = Arc::new(Guard::new(
            config.notification.allowed_target_networks.clone(),
        ));
        let sender = Arc::new(Sender::new(
            guard,
            Duration::from_secs(config.notification.webhook_job_http_client_timeout),
            config.notification.ca_bundle.as_deref(),
        )?);
        let users = Arc::new(Users::new(config.users.htpasswd.clone()));
        let config_throttle = (
            config.users.failed_login_burst,
            config.users.failed_login_interval,
        );
        let recent = Recent::new(
            config.events.attribution_window.max(Duration::from_secs(1)),
            50_000,
        )
        .shared_through(
            (store.backend() == crate::store::Backend::Postgres).then(|| store.clone()),
        );
        let external_host = config.external_host();
        Ok(Arc::new_cyclic(|weak| App {
            // the admin UI under /ui/ is served by the same router as the API
            api: crate::api::router(weak.clone()).merge(crate::ui::router(weak.clone())),
            config,
            registry,
            chartmuseum,
            store,
            events,
            recent,
            facts: crate::observe::manifest::FactsCache::new(4096),
            blob_sizes: crate::quota::BlobSizes::new(65_536),
            token_verifier,
            metrics,
            users,
            login_throttle: LoginThrottle::new(config_throttle.0, config_throttle.1),
            sender,
            notification_switch: Arc::new(NotificationSwitch::default()),
            external_host,
            access_log,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// The API of replica A writes "on" at version 5; replica B writes "off" at 6, and A's
    /// policy watch reads it before A's handler gets to take its own value: the watch's later
    /// value stays (before, the handler's store came last and won, until the next change).
    #[test]
    fn a_switch_value_of_an_older_version_never_replaces_a_newer_one() {
        let switch = NotificationSwitch::default();
        let flag = switch.flag();
        assert_eq!(switch.take(6, false), Some(true), "the watch's read");
        assert_eq!(switch.take(5, true), None, "the handler's older write");
        assert!(!flag.load(Ordering::Relaxed));
        // the same version again (a read after the write): taken, unchanged
        assert_eq!(switch.take(6, false), Some(false));
        assert_eq!(switch.take(7, true), Some(false));
        assert!(flag.load(Ordering::Relaxed));
        // the database lost its latest commits (a failover): version 5 is the truth again
        assert_eq!(switch.take(5, false), None);
        switch.forget_version();
        assert_eq!(switch.take(5, false), Some(true));
        assert!(!flag.load(Ordering::Relaxed));
    }
}
