//! wharf: a sidecar reverse proxy in front of an OCI/Distribution registry and a Helm chart
//! repository that turns the traffic it forwards into Harbor-style webhook events.
//!
//! # Layout
//! The modules follow the data path of a request:
//!
//! - [`route`]: classify a request once into a typed operation (registry, chart, health, API).
//! - [`forward`]: stream a request to its upstream and the response back, OCI error responses;
//!   `forward::affinity`: the upstream connections an HTTP/1 client connection drives in its
//!   own task; `forward::headers`: header hygiene (hop-by-hop, `X-Forwarded-*`, request id);
//!   `forward::tls`: the upstreams' TLS client.
//! - [`observe`]: per-operation flows around `forward`: watch bodies, collect manifests and
//!   chart uploads (capped), attribute tags, de-duplicate, build events; `observe::chart` maps
//!   Harbor's chartrepo paths onto ChartMuseum (its flows; `archive`, `multipart`, `index`,
//!   `facts`: what an upload carries, the form, index.yaml URLs, a chart's facts).
//! - [`events`]: the event model, its payload formats, who made a request (its operator), and
//!   the sink that records events.
//! - [`store`]: all state, behind one interface with two backends — embedded SQLite (one
//!   instance, group commit) or PostgreSQL (shared by replicas): event log, outbox, policies,
//!   knowledge, quota usage; schema migrations; `store copy`.
//! - [`dispatch`]: deliver the outbox to webhook targets: claims, per-target limits and circuit
//!   breaker, retries, signatures, SSRF guard, outcomes written in batches.
//! - [`server`]: listener, TLS, request ids, access log, graceful shutdown.
//! - [`accesslog`]: a request's access-log line: a `tracing` event, or with `log.format: json`
//!   the generic JSON formatter's line, formatted and written by wharf at a fraction of its cost.
//! - [`logwriter`]: where log lines go: standard output, access-log lines gathered and written
//!   together (`log.buffer`, `log.flush_interval`), every other line at once.
//! - [`api`]: the HTTP API: Harbor's (projects, users, system, webhook policies, executions) with
//!   Harbor's list conventions, and wharf's own (event log, side endpoint and its idempotency
//!   keys, quota, metrics).
//! - [`ui`]: the built-in admin UI under `/ui/`: server-rendered pages that read and change
//!   everything through the API, in-process, as the signed-in user.
//! - [`quota`]: project storage limits enforced on manifest pushes; usage rescans.
//! - [`metrics`]: Prometheus metrics.
//! - [`health`]: whether the upstreams and the store answer, for `/readyz` and Harbor's health.
//! - [`glob`]: checking the glob patterns of filters before they are stored.
//! - [`pem`]: every TLS set-up's crypto provider (post-quantum key exchange first) and its
//!   certificates and keys from PEM files; errors name the key.
//! - [`link`]: the `next` link of paginated registry answers.
//! - [`app`]: the state of one process, built from [`config`].
//! - [`config`]: the YAML configuration, env overrides, validation.

#![forbid(unsafe_code)]
// never `unwrap` on input-derived data: outside tests, nothing in the library unwraps at all
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod accesslog;
pub mod api;
pub mod app;
pub mod config;
pub mod dispatch;
pub mod events;
pub mod forward;
pub mod glob;
pub mod health;
pub mod link;
pub mod logwriter;
pub mod metrics;
pub mod observe;
pub mod pem;
pub mod quota;
pub mod route;
pub mod server;
pub mod store;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

/// `e` and its causes as one line, `top: cause: cause` (a cause whose text the line already
/// holds is left out: hyper and rustls often repeat the inner error in the outer one). For logs
/// and stored attempt errors, where the whole chain is wanted in one field.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// Errors starting a wharf instance.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    App(#[from] app::AppError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
}

/// How often a replica checks whether another one changed policies or the notification switch.
pub const POLICY_WATCH: std::time::Duration = std::time::Duration::from_secs(1);

/// Every [`POLICY_WATCH`]: when the policy version moved on past `seen` (a change on any
/// replica), drop this process's cached policies and re-read the notification switch. A
/// version counts as seen only once the switch was read after it: a read that failed (the
/// database busy or restarting) is made again at the next tick, not left to the next change
/// (the cache is dropped once per version, not at every such tick). A version lower than one
/// seen (the database lost its latest commits: a failover to a standby behind, a restore)
/// counts as new, and the switch read at it is taken.
/// Runs until `shutdown`.
async fn watch_policies(
    store: store::Store,
    switch: Arc<app::NotificationSwitch>,
    mut seen: Option<i64>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut dropped = seen;
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLICY_WATCH) => {}
            () = shutdown.cancelled() => return,
        }
        let Ok(now) = store.policy_version().await else {
            continue;
        };
        if seen == Some(now) {
            continue;
        }
        if dropped != Some(now) {
            store.policy_cache().invalidate();
            dropped = Some(now);
        }
        let back = seen.is_some_and(|s| now < s);
        match store.read(store::policies::notification_enabled_at).await {
            Ok((at, on)) => {
                seen = Some(now);
                if back {
                    switch.forget_version();
                }
                let was = switch.take(at, on);
                if on && was == Some(false) {
                    // deliveries that waited for the switch may go now
                    store.outbox_wake().wake(store::db::Due::Anywhere);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the notification switch failed; read again in a second");
            }
        }
    }
}

/// A wharf instance running on the current tokio runtime (used by `main` and by tests).
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its state.
    pub app: Arc<app::App>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), server::ServerError>>,
    background: tokio_util::sync::CancellationToken,
    /// The dispatcher: done once its last attempts are recorded.
    dispatching: tokio::task::JoinHandle<()>,
    /// `shutdown_grace`.
    grace: std::time::Duration,
}

impl Running {
    /// Start serving `config` on `listener` (its address wins over `config.listen`), access-log
    /// lines as `tracing` events.
    pub async fn start(
        config: config::Config,
        listener: tokio::net::TcpListener,
    ) -> Result<Running, StartError> {
        Self::start_with(config, listener, accesslog::Sink::Events).await
    }

    /// [`Running::start`], access-log lines to `access_log`.
    pub async fn start_with(
        config: config::Config,
        listener: tokio::net::TcpListener,
        access_log: accesslog::Sink,
    ) -> Result<Running, StartError> {
        let addr = listener.local_addr().map_err(server::ServerError::Io)?;
        let tls = match &config.tls {
            Some(t) => Some(server::tls_acceptor(&t.cert, &t.key)?),
            None => None,
        };
        let grace = config.shutdown_grace;
        let app = app::App::build(config, access_log).await?;
        // the projects of the config exist for the API from the start, with their ids
        let names: Vec<String> = app.config.projects.keys().cloned().collect();
        if let Err(e) = app
            .store
            .write(move |c| store::projects::ensure_all(c, &names))
            .await
        {
            tracing::error!(error = %e, "cannot record the projects of the config");
        }
        app.store.warn_on_clock_skew().await;
        let background = tokio_util::sync::CancellationToken::new();
        // the switch with its version (a switch not read is read by the watcher)
        let read = app
            .store
            .read(store::policies::notification_enabled_at)
            .await;
        if let Ok((at, on)) = read {
            app.notification_switch.take(at, on);
        }
        tokio::spawn(app.events.clone().run_releaser(background.clone()));
        tokio::spawn(watch_policies(
            app.store.clone(),
            app.notification_switch.clone(),
            read.ok().map(|(at, _)| at),
            background.clone(),
        ));
        tokio::spawn(store::run_housekeeping(
            app.store.clone(),
            app.config.events.attribution_window,
            background.clone(),
        ));
        tokio::spawn(app.events.clone().run_pruner(
            app.config.store.retention,
            app.config.store.retention_pulls,
            background.clone(),
        ));
        let dispatcher = std::sync::Arc::new(
            dispatch::Dispatcher::new(
                app.store.clone(),
                app.sender.clone(),
                app.config.notification.clone(),
                app.metrics.clone(),
                app.notification_switch.flag(),
                app.config.store.claim_lease,
            )
            .with_external_url(app.config.external_url.clone()),
        );
        let dispatching = tokio::spawn(dispatcher.run(background.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // said before the first request is served: no request's line comes before it
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(
            addr = %addr,
            version = env!("CARGO_PKG_VERSION"),
            tls = tls.is_some(),
            workers,
            "wharf listening"
        );
        let task = tokio::spawn(server::serve(
            app.clone(),
            listener,
            tls,
            async move {
                let _ = stopped.await;
            },
            grace,
        ));
        Ok(Running {
            addr,
            app,
            stop,
            task,
            background,
            dispatching,
            grace,
        })
    }

    /// Resolves when the server stopped on its own (it only does on a listener error).
    pub async fn wait(&mut self) -> Result<(), server::ServerError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(server::ServerError::Io(std::io::Error::other(e))),
        }
    }

    /// Graceful shutdown: stop accepting, drain in-flight requests (up to `shutdown_grace`),
    /// stop background work, let the webhook attempts in flight end and record them (within
    /// what is left of `shutdown_grace`; an attempt not recorded by then is sent again once
    /// its claim's lease expires), commit what is queued for the database.
    pub async fn shutdown(self) -> Result<(), server::ServerError> {
        let deadline = tokio::time::Instant::now() + self.grace;
        let _ = self.stop.send(());
        let served = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(server::ServerError::Io(std::io::Error::other(e))),
        };
        self.background.cancel();
        if tokio::time::timeout_at(deadline, self.dispatching)
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?self.grace,
                "webhook attempts still in flight at the end of shutdown_grace: they are attempted again once their claims' leases expire"
            );
        }
        self.app.store.close().await;
        served
    }
}
