//! Dispatch: deliver the outbox to webhook targets.
//!
//! The dispatcher claims due deliveries from the database (woken by every commit that created
//! some, else by the next due time), renders each for its target and POSTs it. Every attempt is
//! a row; the delivery then succeeds, is retried at a time from [`retry`] (honouring
//! `Retry-After` within bounds), or is dead after `webhook_job_max_retry` retries (kept, visible,
//! redeliverable). 410 Gone disables the target. One slow or dead target cannot starve the
//! others: at most `per_target_concurrency` attempts per target are in flight, and after
//! `breaker_failures` consecutive failures its circuit opens, deferring its deliveries (no
//! attempt, no retry used) until a cool-down has passed. Slack targets get at most one message
//! per `slack_interval`. While `notification_enable` is off nothing is sent; deliveries wait.

pub mod client;
pub mod guard;
pub mod policy;
pub mod retry;
pub mod sign;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::NotificationConfig;
use crate::events::format::{self, RenderCtx};
use crate::metrics::Metrics;
use crate::store::outbox::{self, Attempt, Claimed, Next};
use crate::store::{self, Store, StoreError};
use client::{Sender, Sent};
use policy::TargetKind;

/// Per-target memory: in-flight count, circuit breaker, Slack pacing.
#[derive(Debug, Default)]
struct TargetState {
    in_flight: usize,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// The circuit's cool-down passed and one attempt is probing the target.
    probing: bool,
    cooldown: Duration,
    slack_next: Option<Instant>,
}

/// See the module doc.
pub struct Dispatcher {
    store: Store,
    sender: Arc<Sender>,
    cfg: NotificationConfig,
    metrics: Arc<Metrics>,
    targets: Mutex<HashMap<String, TargetState>>,
    slots: Arc<Semaphore>,
    finished: Notify,
    /// Cached `notification_enable` (the API updates it together with the database).
    pub enabled: Arc<AtomicBool>,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        sender: Arc<Sender>,
        cfg: NotificationConfig,
        metrics: Arc<Metrics>,
        enabled: Arc<AtomicBool>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(cfg.max_in_flight));
        Dispatcher {
            store,
            sender,
            cfg,
            metrics,
            targets: Mutex::new(HashMap::new()),
            slots,
            finished: Notify::new(),
            enabled,
        }
    }

    /// Targets not to claim for now: at their concurrency limit, or with an open circuit.
    fn skipped_targets(&self) -> Vec<String> {
        let now = Instant::now();
        let Ok(map) = self.targets.lock() else {
            return Vec::new();
        };
        map.iter()
            .filter(|(_, s)| {
                s.in_flight >= self.cfg.per_target_concurrency
                    || s.open_until.is_some_and(|t| t > now)
            })
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Run until `shutdown`: claim, deliver, record.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        match self.store.write(outbox::recover).await {
            Ok(n) if n > 0 => tracing::info!(
                deliveries = n,
                "resuming deliveries interrupted by a restart"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot recover interrupted deliveries"),
        }
        let wake = self.store.outbox_notify();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let mut idle = Duration::from_secs(1);
            let free = self.slots.available_permits();
            if self.enabled.load(Ordering::Relaxed) && free > 0 {
                let skip = self.skipped_targets();
                let per_target = self.cfg.per_target_concurrency;
                let claimed = self
                    .store
                    .write(move |c| {
                        outbox::claim(c, store::now_ms(), free.min(512), per_target, &skip)
                    })
                    .await;
                match claimed {
                    Ok(batch) if !batch.is_empty() => {
                        let full = batch.len() >= free.min(512);
                        for d in batch {
                            self.start(d);
                        }
                        if full {
                            tokio::select! {
                                () = self.finished.notified() => {}
                                () = shutdown.cancelled() => return,
                            }
                        }
                        continue;
                    }
                    Ok(_) => {
                        if let Ok(Some(due)) = self.store.read(outbox::next_due).await {
                            idle = Duration::from_millis(
                                (due - store::now_ms()).clamp(1, 1000) as u64
                            );
                        }
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => tracing::error!(error = %e, "claiming deliveries failed"),
                }
            }
            tokio::select! {
                () = wake.notified() => {}
                () = self.finished.notified() => {}
                () = tokio::time::sleep(idle) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    fn start(self: &Arc<Self>, d: Claimed) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            // cannot happen (we claimed at most the free slots); put it back
            let store = self.store.clone();
            tokio::spawn(async move {
                let _ = store
                    .write(move |c| outbox::defer(c, d.id, store::now_ms()))
                    .await;
            });
            return;
        };
        if let Ok(mut m) = self.targets.lock() {
            m.entry(d.target.address.clone()).or_default().in_flight += 1;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let address = d.target.address.clone();
            me.deliver(d).await;
            if let Ok(mut m) = me.targets.lock()
                && let Some(s) = m.get_mut(&address)
            {
                s.in_flight = s.in_flight.saturating_sub(1);
            }
            drop(permit);
            me.finished.notify_one();
        });
    }

    /// Wait for the target's circuit or Slack pacing; `Err(until)` defers the delivery.
    async fn gate(&self, d: &Claimed) -> Result<(), Instant> {
        loop {
            let wait = {
                let Ok(mut m) = self.targets.lock() else {
                    return Ok(());
                };
                let s = m.entry(d.target.address.clone()).or_default();
                let now = Instant::now();
                if let Some(t) = s.open_until {
                    if t > now {
                        return Err(t);
                    }
                    // half-open: one attempt probes the target, the others wait for it
                    if s.probing {
                        return Err(now + Duration::from_secs(1));
                    }
                    s.probing = true;
                }
                if d.target.kind != TargetKind::Slack {
                    return Ok(());
                }
                match s.slack_next {
                    Some(t) if t > now => t - now,
                    _ => {
                        s.slack_next = Some(now + self.cfg.slack_interval);
                        return Ok(());
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn note_outcome(&self, address: &str, ok: bool) {
        let Ok(mut m) = self.targets.lock() else {
            return;
        };
        let s = m.entry(address.to_string()).or_default();
        s.probing = false;
        if ok {
            s.consecutive_failures = 0;
            s.open_until = None;
            s.cooldown = Duration::ZERO;
            return;
        }
        s.consecutive_failures += 1;
        if s.consecutive_failures >= self.cfg.breaker_failures {
            s.cooldown = if s.cooldown.is_zero() {
                self.cfg.breaker_cooldown
            } else {
                (s.cooldown * 2).min(self.cfg.breaker_max_cooldown)
            };
            s.open_until = Some(Instant::now() + s.cooldown);
            tracing::warn!(target_address = %address, failures = s.consecutive_failures, cooldown = ?s.cooldown, "circuit open: deliveries to this target wait");
        }
    }

    async fn deliver(&self, d: Claimed) {
        if let Err(until) = self.gate(&d).await {
            let at = store::now_ms()
                + until.saturating_duration_since(Instant::now()).as_millis() as i64;
            let id = d.id;
            self.metrics.delivery("deferred");
            if let Err(e) = self.store.write(move |c| outbox::defer(c, id, at)).await {
                tracing::error!(delivery = id, error = %e, "deferring a delivery failed");
            }
            return;
        }
        let ctx = RenderCtx {
            project_id: d.project_id,
            policy_id: d.policy_id,
        };
        let payload = format::render(&d.event, d.target.format(), &ctx);
        let started_at = store::now_ms();
        let sent = self
            .sender
            .send(&d.target, &payload, &d.event.id.to_string())
            .await;
        self.metrics
            .attempt_seconds
            .observe(sent.duration.as_secs_f64());
        self.note_outcome(&d.target.address, sent.ok());
        let retry_no = d.attempts + 1; // this attempt's number; retries used = retry_no - 1
        let gone = sent.error_kind == Some("gone");
        let next = if sent.ok() {
            Next::Succeeded
        } else if gone || retry_no > self.cfg.webhook_job_max_retry {
            Next::Dead
        } else {
            let ra = sent
                .retry_after
                .as_deref()
                .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()));
            let delay = retry::next_delay(
                &self.cfg.backoff,
                retry_no,
                rand::random::<f64>(),
                ra,
                self.cfg.retry_after_max,
            );
            Next::RetryAt(store::now_ms() + delay.as_millis() as i64)
        };
        self.metrics.delivery(match (next, gone) {
            (Next::Succeeded, _) => "success",
            (Next::Dead, true) => "gone",
            (Next::Dead, false) => "dead",
            (Next::RetryAt(_), _) => "retry",
        });
        log_attempt(&d, &sent, next);
        let attempt = Attempt {
            id: 0,
            delivery_id: d.id,
            started_at,
            duration_ms: sent.duration.as_millis() as i64,
            status_code: sent.status,
            error_kind: sent.error_kind.map(str::to_string),
            error: sent.error.clone(),
            response_excerpt: sent.excerpt.clone(),
        };
        let (policy_id, address, id) = (d.policy_id, d.target.address.clone(), d.id);
        let result = self
            .store
            .write(move |c| {
                outbox::record(c, &attempt, next)?;
                if gone && let Some(idx) = outbox::target_index(c, id)? {
                    outbox::disable_target(
                        c,
                        policy_id,
                        idx,
                        &address,
                        "target answered 410 Gone: disabled",
                    )?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::error!(delivery = d.id, error = %e, "recording a delivery attempt failed");
        }
    }
}

fn log_attempt(d: &Claimed, sent: &Sent, next: Next) {
    // a target URL may carry a secret in its path or query (Slack's do): log scheme and host only
    let address = reqwest::Url::parse(&d.target.address)
        .map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")))
        .unwrap_or_default();
    match next {
        Next::Succeeded => {
            tracing::debug!(delivery = d.id, event_id = %d.event.id, target = %address, status = sent.status, ms = sent.duration.as_millis() as u64, "delivered")
        }
        _ => {
            tracing::warn!(delivery = d.id, event_id = %d.event.id, target = %address, status = sent.status, kind = sent.error_kind, error = sent.error.as_deref(), next = ?next, "delivery attempt failed")
        }
    }
}
