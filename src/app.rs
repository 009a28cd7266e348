//! App: everything a running wharf holds, built once from the config.

use std::sync::Arc;

use crate::config::Config;
use crate::forward::{ForwardError, Upstream};

/// Errors building the app from a validated config.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("upstream: {0}")]
    Upstream(#[from] ForwardError),
}

/// Shared state of one wharf process.
pub struct App {
    pub config: Arc<Config>,
    /// The registry every `/v2` request goes to.
    pub registry: Upstream,
    /// ChartMuseum, when configured.
    pub chartmuseum: Option<Upstream>,
    /// wharf's own API (axum).
    pub api: axum::Router,
}

impl App {
    /// Build the app: upstream clients and the API router.
    pub fn build(config: Config) -> Result<Arc<App>, AppError> {
        let config = Arc::new(config);
        let registry = Upstream::new(
            "registry",
            &config.upstream.registry,
            &config.upstream,
            config.trust_forwarded_headers,
        )?;
        let chartmuseum = config
            .upstream
            .chartmuseum
            .as_deref()
            .map(|url| {
                Upstream::new(
                    "chartmuseum",
                    url,
                    &config.upstream,
                    config.trust_forwarded_headers,
                )
            })
            .transpose()?;
        Ok(Arc::new_cyclic(|weak| App {
            api: crate::api::router(weak.clone()),
            config,
            registry,
            chartmuseum,
        }))
    }
}
