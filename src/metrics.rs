//! Metrics: one registry, exported at `/metrics` in the Prometheus text format.
//!
//! Each metric is updated at the one place the thing it counts happens (the access-log line,
//! the event sink, the dispatcher), so logs and metrics never disagree. Queue depths are read
//! from the database at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub op: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: &'static str,
}

/// What became of a delivery attempt: the `outcome` label of `wharf_delivery_attempts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The target took it.
    Success,
    /// Failed; tried again later.
    Retry,
    /// Failed, with no retry left (or one that must not be retried).
    Dead,
    /// The target answered 410 Gone: dead, and the target disabled.
    Gone,
    /// Not attempted: the target's circuit is open (or another attempt is probing it).
    Deferred,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 5] = [
        AttemptOutcome::Success,
        AttemptOutcome::Retry,
        AttemptOutcome::Dead,
        AttemptOutcome::Gone,
        AttemptOutcome::Deferred,
    ];

    /// The label's value.
    pub fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Success => "success",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Dead => "dead",
            AttemptOutcome::Gone => "gone",
            AttemptOutcome::Deferred => "deferred",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~65 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// Proxied and API requests by operation and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by operation (until the response body was sent).
    pub request_seconds: HistogramFamily<OpLabels>,
    /// Events recorded, by Harbor type.
    pub events: Family<TypeLabels, Counter>,
    /// Events that could not be recorded (database failure).
    pub events_lost: Counter,
    /// Events whose commit a request stopped waiting for (`store.statement_timeout`).
    pub events_late: Counter,
    /// Delivery attempts by outcome: success, retry, dead, gone, deferred.
    pub deliveries: Family<OutcomeLabels, Counter>,
    /// Duration of one delivery attempt.
    pub attempt_seconds: Histogram,
    /// How long an event a client waits for (not pulls) took to commit, from being queued.
    pub event_commit_seconds: Histogram,
    /// Deliveries by state (pending is the queue depth; dead are the failed ones).
    pub outbox: Family<StateLabels, Gauge>,
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Times the listener stopped accepting because `server.max_connections` were open.
    pub connection_limit_reached: Counter,
    /// Failed `accept()` calls (e.g. out of file descriptors).
    pub accept_errors: Counter,
    /// API requests with credentials answered 401.
    pub login_failures: Counter,
    /// API requests refused with 429 by the failed-login throttle.
    pub login_throttled: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wharf");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by operation and status",
            requests.clone(),
        );
        let request_seconds: HistogramFamily<OpLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Request latency by operation, until the response body was sent",
            request_seconds.clone(),
        );
        let events = Family::<TypeLabels, Counter>::default();
        registry.register("events", "Events recorded, by type", events.clone());
        let events_lost = Counter::default();
        registry.register(
            "events_lost",
            "Events that could not be recorded because the database failed",
            events_lost.clone(),
        );
        let events_late = Counter::default();
        registry.register(
            "events_late",
            "Events whose commit a registry request stopped waiting for (store.statement_timeout); each is recorded when the database answers, or counted in events_lost",
            events_late.clone(),
        );
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "delivery_attempts",
            format!(
                "Webhook delivery attempts by outcome ({})",
                AttemptOutcome::ALL.map(AttemptOutcome::label).join(", ")
            ),
            deliveries.clone(),
        );
        let attempt_seconds = latency_histogram();
        registry.register(
            "delivery_attempt_duration_seconds",
            "Duration of one webhook delivery attempt",
            attempt_seconds.clone(),
        );
        let event_commit_seconds = latency_histogram();
        registry.register(
            "event_commit_duration_seconds",
            "Time from a request's event being queued to its transaction's commit (pushes, deletes, chart uploads and deletes, quota refusals, side-endpoint reports; also after a request stopped waiting)",
            event_commit_seconds.clone(),
        );
        let outbox = Family::<StateLabels, Gauge>::default();
        registry.register(
            "deliveries",
            "Webhook deliveries by state (pending = queue depth, dead = failed)",
            outbox.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        let connection_limit_reached = Counter::default();
        registry.register(
            "connection_limit_reached",
            "Times the listener waited because server.max_connections connections were open",
            connection_limit_reached.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            "accept_errors",
            "Failed accept() calls (e.g. out of file descriptors)",
            accept_errors.clone(),
        );
        let login_failures = Counter::default();
        registry.register(
            "login_failures",
            "API requests with credentials answered 401 (wrong user, password or token)",
            login_failures.clone(),
        );
        let login_throttled = Counter::default();
        registry.register(
            "login_throttled",
            "API requests refused with 429 because their client address failed to log in too often",
            login_throttled.clone(),
        );
        Metrics {
            registry,
            login_failures,
            login_throttled,
            connections_open,
            connection_limit_reached,
            accept_errors,
            requests,
            request_seconds,
            events,
            events_lost,
            events_late,
            deliveries,
            attempt_seconds,
            event_commit_seconds,
            outbox,
        }
    }

    /// Count one finished request.
    pub fn request(&self, op: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { op, status })
            .inc();
        self.request_seconds
            .get_or_create(&OpLabels { op })
            .observe(seconds);
    }

    /// Count one recorded event.
    pub fn event(&self, kind: &'static str) {
        self.events
            .get_or_create(&TypeLabels { r#type: kind })
            .inc();
    }

    /// Count one delivery attempt outcome.
    pub fn delivery(&self, outcome: AttemptOutcome) {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each outcome has its own label, and the metric's help lists them as the docs do.
    #[test]
    fn attempt_outcomes_are_named_once_and_listed_in_the_help() {
        let labels = AttemptOutcome::ALL.map(AttemptOutcome::label);
        let unique: std::collections::BTreeSet<_> = labels.iter().collect();
        assert_eq!(unique.len(), labels.len());
        let m = Metrics::new();
        m.delivery(AttemptOutcome::Gone);
        let text = m.encode();
        assert!(text.contains(
            "# HELP wharf_delivery_attempts Webhook delivery attempts by outcome (success, retry, dead, gone, deferred)"
        ), "{text}");
        assert!(
            text.contains("wharf_delivery_attempts_total{outcome=\"gone\"} 1"),
            "{text}"
        );
    }
}
