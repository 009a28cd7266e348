//! Dispatch: deliver the outbox to webhook targets.
//!
//! The dispatcher claims due deliveries from the database (woken by every commit that created
//! some, else by the next due time), renders each for its target and POSTs it. A new delivery
//! whose attempt can start at once is created already claimed by this process and handed to
//! the dispatcher after its commit ([`store::outbox::Intake`]): no claim for it. Every attempt is
//! a row; the delivery then succeeds, is retried at a time from [`retry`] (honouring
//! `Retry-After` within bounds), or is dead after `webhook_job_max_retry` retries (kept, visible,
//! redeliverable). 410 Gone disables the target. A `Custom` target whose template makes no valid
//! body fails the attempt without sending it (`template_output_invalid`), and it is not retried. One slow or dead target cannot starve the
//! others: at most `per_target_concurrency` attempts per target are in flight (the dispatcher
//! holds up to four times as many claims per target, so the next attempt need not wait for a claim's
//! round trip to the store; a claim that waited too long for its turn goes back), and after
//! `breaker_failures` consecutive failures its circuit opens, deferring its deliveries (no
//! attempt, no retry used) until a cool-down has passed. Slack targets get at most one message
//! per `slack_interval`. While `notification_enable` is off nothing is sent; deliveries wait.
//!
//! Several replicas (PostgreSQL): each claims with `FOR UPDATE SKIP LOCKED`, so a delivery is
//! claimed by one replica at a time, under a lease (`store.claim_lease`) and a random token;
//! only the token's holder records the outcome. A replica that dies mid-attempt leaves its
//! deliveries `running` until the lease expires; then any replica puts them back to `pending`
//! and delivers them (same event id: at least once per target). Per-target concurrency, the
//! circuit breaker and Slack pacing are per replica: with N replicas a target may see up to N ×
//! `per_target_concurrency` attempts at once, and each replica opens its own circuit.
//!
//! Parts: this module claims and starts attempts and decides what follows each;
//! `targets` keeps the per-target memory (claims held, turns, circuit, Slack pacing);
//! `recorder` writes finished attempts in batches; [`client`] sends, [`policy`] renders,
//! [`retry`] times retries, [`sign`] signs, [`guard`] refuses private addresses.

pub mod client;
pub mod guard;
pub mod policy;
mod recorder;
pub mod retry;
pub mod sign;
mod targets;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::NotificationConfig;
use crate::events::format::RenderCtx;
use crate::metrics::{AttemptOutcome, Metrics};
use crate::store::outbox::{self, Attempt, Claimed, Next};
use crate::store::{self, Store, StoreError};
use client::{FailureKind, Sender, Sent};
use recorder::{Finished, Recorder};
use targets::{Admit, Targets};

/// Claims held per target, as a multiple of `per_target_concurrency`: the claims beyond the
/// attempts in flight wait locally, so the next attempt starts as soon as one finishes instead
/// of after a claim's round trip (on PostgreSQL a few milliseconds, which would otherwise bound a
/// busy target to `per_target_concurrency` / (attempt + claim) deliveries per second).
const CLAIM_AHEAD: usize = 4;

/// The longest the dispatcher sleeps. Deliveries made due without waking it (a retry another
/// replica scheduled and did not make — it died —, a lease taken back by another replica) are
/// claimed at most this late; retries and deferrals it scheduled itself at their due time.
const IDLE: Duration = Duration::from_secs(1);

/// How often leases that expired are looked for.
const RECLAIM_EVERY: Duration = Duration::from_secs(5);

/// How long the list of addresses with pending deliveries (an index scan per claim otherwise:
/// on PostgreSQL a third of a millisecond, on every wake-up) is reused between claims. A commit
/// of this process that created deliveries drops it at once; a delivery another replica created
/// for an address missing from the list waits at most this much longer here (that replica's
/// own dispatcher is woken by its commit).
const TARGETS_KEPT: Duration = Duration::from_millis(250);

/// The kept list of addresses with pending deliveries, while it is younger than
/// [`TARGETS_KEPT`].
fn fresh(targets: &Option<(Instant, Vec<String>)>) -> Option<Vec<String>> {
    targets
        .as_ref()
        .filter(|(at, _)| at.elapsed() < TARGETS_KEPT)
        .map(|(_, t)| t.clone())
}

/// The kept list of addresses with pending deliveries after a local commit made `due` ones:
/// the addresses of a fan-out are added to it (no scan for them); deliveries made due elsewhere
/// drop it (the next claim scans).
fn with_due(
    targets: Option<(Instant, Vec<String>)>,
    due: store::db::Due,
) -> Option<(Instant, Vec<String>)> {
    use store::db::Due;
    match due {
        Due::Nothing => targets,
        Due::Anywhere => None,
        Due::To(addresses) => targets.map(|(at, mut list)| {
            for a in addresses {
                if let Err(i) = list.binary_search(&a) {
                    list.insert(i, a);
                }
            }
            (at, list)
        }),
    }
}

/// A claim's hold on the dispatcher (see [`Dispatcher::hold_if`]): released when dropped — the
/// attempt ended, or the delivery it was taken for was rolled back — which frees the slot and
/// wakes the dispatcher.
struct Hold {
    dispatcher: Arc<Dispatcher>,
    address: String,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.dispatcher.targets.uncount(&self.address);
        drop(self.permit.take());
        self.dispatcher.finished.notify_one();
    }
}

/// The dispatcher as the store's fan-out sees it ([`outbox::Intake`]): deliveries whose
/// attempt can start at once are created already claimed by this process and started after
/// their commit, from the writer thread, on the dispatcher's runtime.
struct Intake {
    dispatcher: std::sync::Weak<Dispatcher>,
    runtime: tokio::runtime::Handle,
}

impl outbox::Intake for Intake {
    fn admit(&self, address: &str) -> Option<outbox::Admission> {
        self.dispatcher.upgrade()?.admit(address)
    }

    fn start(&self, born: Vec<outbox::Born>) {
        let Some(d) = self.dispatcher.upgrade() else {
            return;
        };
        let _runtime = self.runtime.enter();
        for b in born {
            let Some(id) = b.id.get() else {
                // cannot happen after COMMIT; the lease gives the delivery back
                tracing::error!(event = %b.claimed.event.id, "a delivery created claimed has no id");
                continue;
            };
            let claimed = Claimed { id, ..b.claimed };
            d.launch(claimed, b.hold, b.policies);
        }
    }
}

/// See the module doc.
pub struct Dispatcher {
    store: Store,
    sender: Arc<Sender>,
    cfg: NotificationConfig,
    metrics: Arc<Metrics>,
    /// Per-target memory: claims held, circuit breaker, Slack pacing.
    targets: Targets,
    slots: Arc<Semaphore>,
    finished: Notify,
    /// Cached `notification_enable` (the API updates it together with the database).
    pub enabled: Arc<AtomicBool>,
    /// Retries and deferrals this process scheduled (deliveries due later), counted from 1 (a
    /// restart may find some); `looked`: the count when a claim last found nothing due later.
    /// While they differ a claim that is not full looks up the next due time; otherwise the
    /// dispatcher polls once per idle second (see [`IDLE`]).
    later: Arc<AtomicU64>,
    looked: AtomicU64,
    /// How long a claim holds (`store.claim_lease`).
    lease: Duration,
    /// Finished attempts on their way to the store (see [`recorder`]).
    outcomes: tokio::sync::mpsc::UnboundedSender<Finished>,
    recorder: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Finished>>>,
    /// `external_url`, when configured: chat formats and templates link to the artifact.
    external_url: Option<String>,
    /// Cancelled when [`Dispatcher::run`] stops claiming: no attempt starts after it.
    stopping: CancellationToken,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        sender: Arc<Sender>,
        cfg: NotificationConfig,
        metrics: Arc<Metrics>,
        enabled: Arc<AtomicBool>,
        lease: Duration,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(cfg.max_in_flight));
        let targets = Targets::new(targets::Limits::of(&cfg));
        let (outcomes, recorder) = tokio::sync::mpsc::unbounded_channel();
        Dispatcher {
            store,
            sender,
            cfg,
            metrics,
            targets,
            slots,
            finished: Notify::new(),
            enabled,
            later: Arc::new(AtomicU64::new(1)),
            looked: AtomicU64::new(0),
            lease,
            outcomes,
            recorder: Mutex::new(Some(recorder)),
            external_url: None,
            stopping: CancellationToken::new(),
        }
    }

    /// Payloads link to artifacts under `external_url` (chat formats, templates' `link`).
    pub fn with_external_url(mut self, external_url: Option<String>) -> Self {
        self.external_url = external_url;
        self
    }

    /// Deliveries left `running` by a process that is gone go back to `pending`: on SQLite
    /// (one instance) all of them at start; on PostgreSQL those whose lease expired (another
    /// replica may be attempting the others right now), at start and every few seconds.
    async fn reclaim(&self, at_start: bool) {
        let sqlite = self.store.backend() == store::Backend::Sqlite;
        let result = self
            .store
            .write_relaxed(move |c| {
                if at_start && sqlite {
                    outbox::recover(c)
                } else {
                    outbox::reclaim_expired(c, store::now_ms())
                }
            })
            .await;
        match result {
            Ok(n) if n > 0 => tracing::info!(
                deliveries = n,
                "resuming deliveries interrupted by a restart or a replica that went away"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot recover interrupted deliveries"),
        }
    }

    /// Most claims held per target (see [`CLAIM_AHEAD`]).
    fn held_per_target(&self) -> usize {
        self.cfg.per_target_concurrency.saturating_mul(CLAIM_AHEAD)
    }

    /// Run until `shutdown`: claim, deliver, record. Then stop: no new claims, claims still
    /// waiting for their target's turn go back to pending unattempted, the attempts in flight
    /// end and their outcomes are written; returns when all of that is done (the caller
    /// bounds the wait, and closes the store after it).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.reclaim(true).await;
        // the recorder outlives the claims: it writes the outcomes of the last attempts
        let recorder_stop = CancellationToken::new();
        let recorder = self
            .recorder
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .map(|rx| {
                let recorder = Recorder {
                    store: self.store.clone(),
                    later: self.later.clone(),
                };
                tokio::spawn(recorder.run(rx, recorder_stop.clone()))
            });
        // new deliveries that can be attempted at once come created claimed, while this runs
        let intake: Arc<dyn outbox::Intake> = Arc::new(Intake {
            dispatcher: Arc::downgrade(&self),
            runtime: tokio::runtime::Handle::current(),
        });
        self.store.set_intake(Arc::downgrade(&intake));
        self.claim_until(&shutdown).await;
        drop(intake);
        self.stopping.cancel();
        // every slot back: each attempt ended (its outcome queued), each claim waiting for
        // its turn went back to pending
        let all = u32::try_from(self.cfg.max_in_flight).unwrap_or(u32::MAX);
        let _all = self.slots.acquire_many(all).await;
        recorder_stop.cancel();
        if let Some(r) = recorder {
            let _ = r.await;
        }
    }

    /// Claim and start attempts until `shutdown`.
    async fn claim_until(self: &Arc<Self>, shutdown: &CancellationToken) {
        let mut last_reclaim = Instant::now();
        let wake = self.store.outbox_wake();
        let mut rotate = 0usize;
        // the last scan of addresses with pending deliveries (see TARGETS_KEPT)
        let mut targets: Option<(Instant, Vec<String>)> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if last_reclaim.elapsed() >= RECLAIM_EVERY {
                last_reclaim = Instant::now();
                self.reclaim(false).await;
            }
            let mut idle = IDLE;
            // A finished attempt frees a slot, or a claim of a target at its limit: worth
            // another claim only when one of them held the last claim back.
            let mut held_back = true;
            let free = self.slots.available_permits();
            if self.enabled.load(Ordering::Relaxed) && free > 0 {
                rotate = rotate.wrapping_add(1);
                let per_target = self.held_per_target();
                let (in_flight, skip) = self.targets.claim_limits(per_target);
                let at_limit = in_flight.values().any(|n| *n >= per_target);
                let known = fresh(&targets);
                let limit = free.min(512);
                let limits = outbox::ClaimLimits {
                    limit,
                    per_target,
                    in_flight,
                    skip,
                    rotate,
                    targets: None,
                };
                let lease_ms = self.lease.as_millis() as i64;
                let later = self.later.load(Ordering::Acquire);
                let look_ahead = later != self.looked.load(Ordering::Relaxed);
                // policies as of the claim (see `wanted`): taken before its statement reads
                // them, so that a change committed before the claim is answered is rechecked
                let policies = self.store.policy_cache().loading();
                let claimed = self
                    .store
                    .write_relaxed(move |c| {
                        let now = store::now_ms();
                        let lease = outbox::Lease {
                            token: rand::random::<i64>(),
                            until: now + lease_ms,
                        };
                        outbox::claim_next(c, now, limits, known, lease, look_ahead)
                    })
                    .await;
                match claimed {
                    Ok(job) => {
                        if let Some(scanned) = job.scanned {
                            targets = Some((Instant::now(), scanned));
                        }
                        let full = job.batch.len() >= limit;
                        for d in job.batch {
                            self.start(d, policies);
                        }
                        if full {
                            // Claim again once a good share of the slots is free (or a little
                            // time passed): one claim per batch of attempts, not one per attempt.
                            let refill = (self.cfg.max_in_flight / 2).max(1);
                            let until = tokio::time::Instant::now() + Duration::from_millis(50);
                            while self.slots.available_permits() < refill {
                                tokio::select! {
                                    () = self.finished.notified() => {}
                                    () = tokio::time::sleep_until(until) => break,
                                    () = shutdown.cancelled() => return,
                                }
                            }
                            continue;
                        }
                        // Not full: nothing else claimable is due now. Sleep until the next
                        // due time the claim found, or a circuit closes. Busy targets wake us
                        // by finishing an attempt; their due deliveries must not (they would
                        // make this loop spin while the target is busy).
                        if look_ahead && job.next_due.is_none() {
                            // until this process schedules another retry or deferral
                            self.looked.store(later, Ordering::Relaxed);
                        }
                        let now = store::now_ms();
                        let idle_ms = IDLE.as_millis() as i64;
                        let mut wait = job.next_due.map_or(idle_ms, |due| due - now);
                        if let Some(reopen) = self.targets.next_reopen() {
                            wait = wait.min(reopen.as_millis() as i64 + 1);
                        }
                        idle = Duration::from_millis(wait.clamp(1, idle_ms) as u64);
                        // (decided by the claim, not by the attempts in flight now: those it
                        // started may have finished already, their wake-up waiting)
                        held_back = at_limit || job.filled;
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => tracing::error!(error = %e, "claiming deliveries failed"),
                }
            }
            tokio::select! {
                // deliveries committed here, perhaps for an address not in the list
                due = wake.woken() => targets = with_due(targets, due),
                () = self.finished.notified(), if held_back => {}
                () = tokio::time::sleep(idle) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// A claim's hold on an attempt slot and on its target's count of claims held; `None`
    /// when every slot is taken, or when `admit` says no for the target's state (checked and
    /// counted under one lock: writers admit in parallel).
    fn hold_if(self: &Arc<Self>, address: &str, admit: Admit) -> Option<Hold> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        if !self.targets.count(address, admit) {
            return None;
        }
        Some(Hold {
            dispatcher: self.clone(),
            address: address.to_string(),
            permit: Some(permit),
        })
    }

    /// A hold for a delivery about to be created (see [`outbox::Intake`]): only when its
    /// attempt can start at once — notifications on, a free slot, fewer claims held for the
    /// target than `per_target_concurrency` (none waiting for a turn, so a backlog keeps its
    /// order), its circuit closed.
    fn admit(self: &Arc<Self>, address: &str) -> Option<outbox::Admission> {
        if !self.enabled.load(Ordering::Relaxed) || self.stopping.is_cancelled() {
            return None;
        }
        let hold = self.hold_if(address, Admit::AtOnce)?;
        Some(outbox::Admission {
            lease: outbox::Lease {
                token: rand::random::<i64>(),
                until: store::now_ms() + self.lease.as_millis() as i64,
            },
            hold: Box::new(hold),
        })
    }

    /// Start `d`, claimed when the policy cache was at generation `policies`.
    fn start(self: &Arc<Self>, d: Claimed, policies: u64) {
        let Some(hold) = self.hold_if(&d.target.address, Admit::Always) else {
            // we claimed at most the free slots, but a delivery created claimed may have taken
            // one since: put it back, due now
            let me = self.clone();
            tokio::spawn(async move { me.put_back(d.id, d.token).await });
            return;
        };
        self.launch(d, Box::new(hold), policies);
    }

    /// Attempt `d` in a task of its own when its target's turn comes, holding `hold` until the
    /// attempt ends; `policies`: the policy cache's generation before its policies were read
    /// (see `wanted`).
    fn launch(self: &Arc<Self>, d: Claimed, hold: Box<dyn Send + Sync>, policies: u64) {
        let sending = self.targets.sending(&d.target.address);
        let me = self.clone();
        tokio::spawn(async move {
            // the target's turn (FIFO): at most per_target_concurrency attempts at once;
            // stopping ends the wait
            let turn = tokio::select! {
                turn = sending.acquire_owned() => turn.ok(),
                () = me.stopping.cancelled() => None,
            };
            if turn.is_none() || !me.lease_left(d.lease_until) || me.stopping.is_cancelled() {
                // waited too long for its turn (the attempt might outlive the claim's
                // lease), or this process is stopping: back to pending, now, for whoever
                // claims it next
                me.put_back(d.id, d.token).await;
            } else if me.wanted(&d, policies).await {
                me.deliver(d).await;
            }
            drop(turn);
            drop(hold);
        });
    }

    /// Is the claim `d`, taken when the policy cache was at generation `policies`, still to be
    /// attempted now that its turn came? A claim can wait for its turn for most of its lease:
    /// meanwhile its policy may have been deleted or switched off, its target may have
    /// answered 410 (each ends the delivery in the store), or notifications may have been
    /// switched off. Each of those moves the cache on (in this process at once, in the others
    /// within their policy watch), so only then is the store asked ([`outbox::recheck`]).
    /// With notifications off the claim goes back to pending, due now, for when they are on.
    async fn wanted(&self, d: &Claimed, policies: u64) -> bool {
        let (id, token) = (d.id, d.token);
        if !self.enabled.load(Ordering::Relaxed) {
            self.put_back(id, token).await;
            return false;
        }
        if self.store.policy_cache().loading() == policies {
            return true;
        }
        match self
            .store
            .write_relaxed(move |c| outbox::recheck(c, id, token))
            .await
        {
            Ok(outbox::Recheck::Go) => true,
            Ok(outbox::Recheck::Ended | outbox::Recheck::NotOurs) => false,
            // the store cannot say: the attempt goes ahead (at least once)
            Err(e) => {
                tracing::warn!(delivery = id, error = %e, "cannot recheck a claim; attempting it");
                true
            }
        }
    }

    /// The claim `token` of delivery `id` goes back to pending, due now, unattempted.
    async fn put_back(&self, id: i64, token: i64) {
        if let Err(e) = self
            .store
            .write_relaxed(move |c| outbox::defer(c, id, store::now_ms(), token))
            .await
        {
            tracing::warn!(delivery = id, error = %e, "putting a claim back failed; it is taken over when its lease expires");
        }
    }

    /// Is there time left in a claim that holds until `lease_until` (unix ms) for one whole
    /// attempt (its timeout, and a second to record it)? `store.claim_lease` is at least the
    /// timeout + 5 s, so a claim may wait up to 4 s for its turn.
    fn lease_left(&self, lease_until: i64) -> bool {
        store::now_ms().saturating_add(self.attempt_ms()) <= lease_until
    }

    /// One whole attempt: its timeout, and a second to record it (ms).
    fn attempt_ms(&self) -> i64 {
        let attempt =
            Duration::from_secs(self.cfg.webhook_job_http_client_timeout) + Duration::from_secs(1);
        attempt.as_millis() as i64
    }

    /// The latest instant an attempt of a claim that holds until `lease_until` (unix ms) may
    /// start and still end within the lease.
    fn start_by(&self, lease_until: i64) -> Instant {
        let left = lease_until - self.attempt_ms() - store::now_ms();
        Instant::now() + Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }

    async fn deliver(&self, d: Claimed) {
        let start_by = self.start_by(d.lease_until);
        let probe = match self
            .targets
            .gate(&d.target.address, d.target.kind, start_by, &self.stopping)
            .await
        {
            Ok(probe) => probe,
            Err(until) => {
                let at = store::now_ms()
                    + until.saturating_duration_since(Instant::now()).as_millis() as i64;
                let (id, token) = (d.id, d.token);
                self.metrics.delivery(AttemptOutcome::Deferred);
                self.later.fetch_add(1, Ordering::Release);
                if let Err(e) = self
                    .store
                    .write_relaxed(move |c| outbox::defer(c, id, at, token))
                    .await
                {
                    tracing::error!(delivery = id, error = %e, "deferring a delivery failed");
                }
                return;
            }
        };
        let ctx = RenderCtx {
            project_id: d.project_id,
            policy_id: d.policy_id,
            delivery_id: Some(d.id),
            external_url: self.external_url.clone(),
        };
        let started_at = store::now_ms();
        // a body that cannot be made (a Custom target's template) is a failed attempt that
        // is not retried and says nothing about the target
        let sent = match d.target.render_async(&d.event, &ctx).await {
            Ok(payload) => {
                self.sender
                    .send(&d.target, &payload, &d.event.id.to_string())
                    .await
            }
            Err(e) => Sent::unrendered(&e),
        };
        self.metrics
            .attempt_seconds
            .observe(sent.duration.as_secs_f64());
        match sent.error_kind {
            Some(k) if !k.involves_target() => self.targets.release_probe(&d.target.address, probe),
            _ => self
                .targets
                .note_outcome(&d.target.address, sent.ok(), probe),
        }
        let retry_no = d.attempts + 1; // this attempt's number; retries used = retry_no - 1
        let gone = sent.error_kind == Some(FailureKind::Gone);
        let next = if sent.ok() {
            Next::Succeeded
        } else if !sent.retryable() || retry_no > self.cfg.webhook_job_max_retry {
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
            (Next::Succeeded, _) => AttemptOutcome::Success,
            (Next::Dead, true) => AttemptOutcome::Gone,
            (Next::Dead, false) => AttemptOutcome::Dead,
            (Next::RetryAt(_), _) => AttemptOutcome::Retry,
        });
        log_attempt(&d, &sent, next);
        let attempt = Attempt {
            id: 0,
            delivery_id: d.id,
            started_at,
            duration_ms: sent.duration.as_millis() as i64,
            status_code: sent.status,
            error_kind: sent.error_kind,
            error: sent.error.clone(),
            response_excerpt: sent.excerpt.clone(),
        };
        let gone = gone.then(|| (d.policy_id, d.target.address.clone()));
        let finished = Finished {
            outcome: outbox::Outcome {
                attempt,
                next,
                token: d.token,
            },
            gone,
        };
        if self.outcomes.send(finished).is_err() {
            tracing::error!(
                delivery = d.id,
                "the attempt recorder has stopped; the attempt is made again when its claim expires"
            );
        }
    }
}

/// A target address as logs may show it: a target URL may carry a secret in its path or query
/// (Slack's do), so only scheme, host and port. A `Display`, parsed only when a log line is
/// written: a delivery logged at `debug` (the default level hides it) costs no URL parse.
pub struct Loggable<'a>(pub &'a str);

impl std::fmt::Display for Loggable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match guard::target_url(self.0) {
            Ok(u) => match u.port() {
                Some(p) => write!(f, "{}://{}:{p}", u.scheme(), u.host_str().unwrap_or("")),
                None => write!(f, "{}://{}", u.scheme(), u.host_str().unwrap_or("")),
            },
            Err(_) => f.write_str("(unparsable address)"),
        }
    }
}

fn log_attempt(d: &Claimed, sent: &Sent, next: Next) {
    let address = Loggable(&d.target.address);
    match next {
        Next::Succeeded => {
            tracing::debug!(delivery = d.id, event_id = %d.event.id, target_address = %address, status = sent.status, ms = sent.duration.as_millis() as u64, "delivered")
        }
        _ => {
            tracing::warn!(delivery = d.id, event_id = %d.event.id, target_address = %address, status = sent.status, kind = sent.error_kind.map(FailureKind::name), error = sent.error.as_deref(), next = ?next, "delivery attempt failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::guard::Guard;

    #[test]
    fn a_logged_target_address_keeps_only_scheme_host_and_port() {
        let shown = |a: &str| Loggable(a).to_string();
        assert_eq!(
            shown("https://hooks.slack.com/services/T0/B0/secret?x=1"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            shown("http://user:pw@127.0.0.1:8080/hook#frag"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(shown("http://[::1]:9/"), "http://[::1]:9");
        assert_eq!(shown("not a url"), "(unparsable address)");
        assert_eq!(shown("https://h:443/p"), "https://h");
    }

    fn dispatcher(cfg: NotificationConfig, dir: &std::path::Path) -> Dispatcher {
        let store = Store::open_sqlite(dir, store::Synchronous::Normal).unwrap();
        let sender = Sender::new(Arc::new(Guard::default()), Duration::from_secs(1), None).unwrap();
        Dispatcher::new(
            store,
            Arc::new(sender),
            cfg,
            Arc::new(Metrics::new()),
            Arc::new(AtomicBool::new(true)),
            Duration::from_secs(60),
        )
    }

    /// A claim is rechecked against the policies as of its claim statement: a policy deleted
    /// after the claim read it — before the claim was even answered — ends the delivery, which
    /// is not sent. (Before, the generation was taken when the claim was started, after the
    /// delete's invalidation, so no recheck was made.)
    #[tokio::test]
    async fn a_claim_is_rechecked_against_the_policies_as_of_its_claim() {
        use crate::dispatch::policy::{Policy, Target};
        use crate::events::{Event, EventKind};
        use crate::store::{events, outbox::ClaimLimits, outbox::Lease, policies};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), store::Synchronous::Normal).unwrap();
        let guard = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let sender = Sender::new(Arc::new(guard), Duration::from_secs(1), None).unwrap();
        let d = Arc::new(Dispatcher::new(
            store.clone(),
            Arc::new(sender),
            NotificationConfig::default(),
            Arc::new(Metrics::new()),
            Arc::new(AtomicBool::new(true)),
            Duration::from_secs(60),
        ));
        // a receiver that counts the requests it gets
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        {
            let got = got.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                while let Ok((mut conn, _)) = listener.accept().await {
                    got.fetch_add(1, Ordering::SeqCst);
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
        let policy = Policy::sample(
            "prj",
            vec![EventKind::PushArtifact],
            vec![Target::http(address.clone())],
        );
        let pid = store
            .write(move |c| policies::insert(c, &policy))
            .await
            .unwrap();
        let event = Event::new(
            EventKind::PushArtifact,
            &crate::route::Repository::parse("prj/app").unwrap(),
            "admin",
        );
        store
            .write(move |c| events::insert(c, &event, None))
            .await
            .unwrap();
        let policies = store.policy_cache().loading();
        let claimed = store
            .write(|c| {
                let limits = ClaimLimits {
                    limit: 1,
                    per_target: 1,
                    ..ClaimLimits::default()
                };
                let lease = Lease {
                    token: 7,
                    until: store::now_ms() + 60_000,
                };
                outbox::claim(c, store::now_ms() + 1, &limits, lease)
            })
            .await
            .unwrap()
            .pop()
            .expect("one delivery claimed");
        let id = claimed.id;
        store
            .write(move |c| policies::delete(c, "prj", pid))
            .await
            .unwrap();
        d.start(claimed, policies);
        let state = || {
            store.read(move |c| {
                c.text(
                    "SELECT state FROM deliveries WHERE id = ?1",
                    &[store::db::Value::Int(id)],
                )
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while d.targets.held(&address) > 0 {
            assert!(Instant::now() < deadline, "the claim never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(state().await.unwrap().as_deref(), Some("dead"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(got.load(Ordering::SeqCst), 0, "sent to a deleted policy");
        store.close().await;
    }

    #[test]
    fn a_local_fan_out_extends_the_kept_list_and_other_deliveries_drop_it() {
        use store::db::Due;
        let at = Instant::now();
        let kept = Some((at, vec!["http://a/".to_string(), "http://c/".to_string()]));
        let to = |a: &[&str]| Due::To(a.iter().map(|s| s.to_string()).collect());
        let got = with_due(kept.clone(), to(&["http://b/", "http://c/"]));
        assert_eq!(
            got,
            Some((
                at,
                vec![
                    "http://a/".to_string(),
                    "http://b/".to_string(),
                    "http://c/".to_string()
                ]
            )),
            "added in address order, once, and as old as the scan"
        );
        assert_eq!(with_due(kept.clone(), Due::Nothing), kept);
        assert_eq!(with_due(kept, Due::Anywhere), None);
        assert_eq!(with_due(None, to(&["http://b/"])), None, "no list: scan");
    }

    /// A delivery is created claimed only when its attempt can start at once: notifications
    /// on, a free slot, fewer than `per_target_concurrency` claims held for its target, its
    /// circuit closed. A hold dropped (the job rolled back, or the attempt ended) gives the
    /// slot and the target's count back.
    #[tokio::test]
    async fn deliveries_are_admitted_only_when_their_attempt_can_start_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = Arc::new(dispatcher(
            NotificationConfig {
                per_target_concurrency: 2,
                max_in_flight: 3,
                breaker_failures: 2,
                ..NotificationConfig::default()
            },
            dir.path(),
        ));
        let held = |a: &str| d.targets.held(a);
        let a1 = d.admit("http://a/").expect("a free slot");
        assert!(a1.lease.until > store::now_ms() + 59_000);
        let a2 = d
            .admit("http://a/")
            .expect("below the target's concurrency");
        assert!(d.admit("http://a/").is_none(), "the target is at its limit");
        assert_eq!(held("http://a/"), 2);
        let b1 = d.admit("http://b/").expect("another target");
        assert!(d.admit("http://c/").is_none(), "every slot is taken");
        drop(a2);
        assert_eq!(held("http://a/"), 1);
        assert_eq!(d.slots.available_permits(), 1);
        // an open circuit, notifications off: not admitted
        for _ in 0..2 {
            d.targets.note_outcome("http://c/", false, false);
        }
        assert!(d.admit("http://c/").is_none(), "circuit open");
        d.enabled.store(false, Ordering::Relaxed);
        assert!(d.admit("http://a/").is_none(), "notifications off");
        d.enabled.store(true, Ordering::Relaxed);
        assert!(d.admit("http://a/").is_some());
        drop((a1, b1));
        assert_eq!(d.slots.available_permits(), 3);
        assert_eq!(held("http://a/") + held("http://b/") + held("http://c/"), 0);
    }
}
