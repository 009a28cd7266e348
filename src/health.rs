//! Health: whether wharf can do its job now — each upstream answers HTTP (the registry at
//! `/v2/`, ChartMuseum at `/health`, 3 s each) and the store answers a query (5 s). One check,
//! shown two ways: `/readyz` (for load balancers and Kubernetes) and Harbor's
//! `GET /api/v2.0/health`.

use std::time::Duration;

use http::StatusCode;

use crate::forward::Upstream;
use crate::store::{Backend, Store};

/// How long the store may take to answer.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the store did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreProblem {
    /// The query failed (logged with its cause).
    Unreachable,
    /// No answer within `STORE_TIMEOUT` (5 s).
    Timeout,
}

impl StoreProblem {
    pub fn name(self) -> &'static str {
        match self {
            StoreProblem::Unreachable => "unreachable",
            StoreProblem::Timeout => "timeout",
        }
    }
}

/// One upstream's answer: its status, or the kind of failure (`ForwardError::kind`).
#[derive(Debug, Clone)]
pub struct UpstreamCheck {
    pub name: &'static str,
    pub answer: Result<StatusCode, &'static str>,
}

/// What one check found.
#[derive(Debug, Clone)]
pub struct Report {
    pub upstreams: Vec<UpstreamCheck>,
    pub store: Result<(), StoreProblem>,
    pub backend: Backend,
}

impl Report {
    /// Every upstream answered and the store too.
    pub fn ok(&self) -> bool {
        self.store.is_ok() && self.upstreams.iter().all(|u| u.answer.is_ok())
    }
}

/// Probe the upstreams and the store.
pub async fn check(registry: &Upstream, chartmuseum: Option<&Upstream>, store: &Store) -> Report {
    let mut upstreams = Vec::new();
    let probes = std::iter::once((registry, "/v2/")).chain(chartmuseum.map(|c| (c, "/health")));
    for (up, path) in probes {
        let answer = up.probe(path).await.map_err(|e| e.kind());
        upstreams.push(UpstreamCheck {
            name: up.name(),
            answer,
        });
    }
    let store_answer = match tokio::time::timeout(STORE_TIMEOUT, store.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::warn!(%error, "health check: the store is not reachable");
            Err(StoreProblem::Unreachable)
        }
        Err(_) => Err(StoreProblem::Timeout),
    };
    Report {
        upstreams,
        store: store_answer,
        backend: store.backend(),
    }
}
