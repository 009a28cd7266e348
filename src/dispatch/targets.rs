//! What the dispatcher remembers per target address (in this process only): claims held, the
//! attempts allowed at once (`per_target_concurrency`), the circuit breaker
//! (`breaker_failures`, `breaker_cooldown`, `breaker_max_cooldown`) and Slack pacing
//! (`slack_interval`). With several replicas each keeps its own (see the module doc of
//! [`super`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Loggable;
use super::policy::TargetKind;
use crate::config::NotificationConfig;

/// The settings [`Targets`] applies (from `notification`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Attempts at once per target.
    pub per_target_concurrency: usize,
    /// Consecutive failures that open a circuit.
    pub breaker_failures: u32,
    /// A circuit's first cool-down; each failed probe doubles it, up to `breaker_max_cooldown`.
    pub breaker_cooldown: Duration,
    pub breaker_max_cooldown: Duration,
    /// At most one message per this to a Slack target.
    pub slack_interval: Duration,
}

impl Limits {
    pub fn of(cfg: &NotificationConfig) -> Self {
        Limits {
            per_target_concurrency: cfg.per_target_concurrency,
            breaker_failures: cfg.breaker_failures,
            breaker_cooldown: cfg.breaker_cooldown,
            breaker_max_cooldown: cfg.breaker_max_cooldown,
            slack_interval: cfg.slack_interval,
        }
    }
}

/// One target's memory.
#[derive(Debug, Default)]
struct TargetState {
    /// Claims held (attempts in flight and claims waiting for their turn).
    in_flight: usize,
    /// `per_target_concurrency` permits: an attempt holds one while it runs.
    sending: Option<Arc<Semaphore>>,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// The circuit's cool-down passed and one attempt is probing the target.
    probing: bool,
    cooldown: Duration,
    slack_next: Option<Instant>,
}

/// Every target's memory, under one lock (held only for map updates, never across an await).
#[derive(Debug)]
pub struct Targets {
    map: Mutex<HashMap<String, TargetState>>,
    limits: Limits,
}

/// Whether a claim may be counted against its target (see [`Targets::count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Any claim (one the dispatcher took from the store: it already respected the limits).
    Always,
    /// Only if its attempt can start at once: fewer claims held than `per_target_concurrency`
    /// (none waiting for a turn, so a backlog keeps its order) and the circuit closed.
    AtOnce,
}

impl Targets {
    pub fn new(limits: Limits) -> Self {
        Targets {
            map: Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// Count one more claim held for `address`, if `admit` allows it now.
    pub fn count(&self, address: &str, admit: Admit) -> bool {
        let Ok(mut m) = self.map.lock() else {
            return false;
        };
        let s = m.entry(address.to_string()).or_default();
        let allowed = match admit {
            Admit::Always => true,
            Admit::AtOnce => {
                s.in_flight < self.limits.per_target_concurrency && s.open_until.is_none()
            }
        };
        if allowed {
            s.in_flight += 1;
        }
        allowed
    }

    /// A claim counted by [`Targets::count`] ended.
    pub fn uncount(&self, address: &str) {
        if let Ok(mut m) = self.map.lock()
            && let Some(s) = m.get_mut(address)
        {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }

    /// Claims held for `address` now.
    #[cfg(test)]
    pub fn held(&self, address: &str) -> usize {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(address).map(|s| s.in_flight))
            .unwrap_or(0)
    }

    /// The target's turns: `per_target_concurrency` permits, first come first served.
    pub fn sending(&self, address: &str) -> Arc<Semaphore> {
        let per_target = self.limits.per_target_concurrency;
        match self.map.lock() {
            Ok(mut m) => m
                .entry(address.to_string())
                .or_default()
                .sending
                .get_or_insert_with(|| Arc::new(Semaphore::new(per_target)))
                .clone(),
            Err(_) => Arc::new(Semaphore::new(per_target)),
        }
    }

    /// What limits the next claim: claims held per target (they count against `held_max`),
    /// and targets not to claim at all for now: at that limit, or with an open circuit.
    pub fn claim_limits(&self, held_max: usize) -> (HashMap<String, usize>, Vec<String>) {
        let now = Instant::now();
        let Ok(map) = self.map.lock() else {
            return (HashMap::new(), Vec::new());
        };
        let in_flight = map
            .iter()
            .filter(|(_, s)| s.in_flight > 0)
            .map(|(a, s)| (a.clone(), s.in_flight))
            .collect();
        let skip = map
            .iter()
            .filter(|(_, s)| s.in_flight >= held_max || s.open_until.is_some_and(|t| t > now))
            .map(|(a, _)| a.clone())
            .collect();
        (in_flight, skip)
    }

    /// How long until the first open circuit may be probed again, if one is open.
    pub fn next_reopen(&self) -> Option<Duration> {
        let now = Instant::now();
        let map = self.map.lock().ok()?;
        map.values()
            .filter_map(|s| s.open_until)
            .filter(|t| *t > now)
            .min()
            .map(|t| t - now)
    }

    /// Wait for the target's circuit or Slack pacing. `Ok(probe)`: go — as the one attempt
    /// probing a circuit whose cool-down has passed when `probe`; `Err(until)` defers the
    /// delivery: the circuit is open, or Slack's pace would start the attempt after
    /// `start_by` (when its claim's lease no longer covers it: sent then, it could be sent
    /// twice), and the pace's turn is left to the next message; or `stop` was cancelled while
    /// it waited for its pace (the process is stopping: `Err(now)`, the turn and a probe
    /// left free).
    pub async fn gate(
        &self,
        address: &str,
        kind: TargetKind,
        start_by: Instant,
        stop: &CancellationToken,
    ) -> Result<bool, Instant> {
        let mut probe = false;
        loop {
            let wait = {
                let Ok(mut m) = self.map.lock() else {
                    return Ok(probe);
                };
                let s = m.entry(address.to_string()).or_default();
                let now = Instant::now();
                // (once this attempt is the probe, waiting for Slack pacing keeps it so)
                if !probe && let Some(t) = s.open_until {
                    if t > now {
                        return Err(t);
                    }
                    // half-open: one attempt probes the target, the others wait for it
                    if s.probing {
                        return Err(now + Duration::from_secs(1));
                    }
                    s.probing = true;
                    probe = true;
                }
                if kind != TargetKind::Slack {
                    return Ok(probe);
                }
                match s.slack_next {
                    Some(t) if t > start_by => {
                        if probe {
                            s.probing = false;
                        }
                        return Err(t);
                    }
                    Some(t) if t > now => t - now,
                    _ => {
                        s.slack_next = Some(now + self.limits.slack_interval);
                        return Ok(probe);
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {
                    self.release_probe(address, probe);
                    return Err(Instant::now());
                }
            }
        }
    }

    /// Count an attempt's outcome for the target's circuit. A failure opens the circuit after
    /// `breaker_failures` in a row; a failed probe opens it again for twice as long. Attempts
    /// that started before the circuit opened and fail while it is open do not extend it.
    pub fn note_outcome(&self, address: &str, ok: bool, probe: bool) {
        let Ok(mut m) = self.map.lock() else {
            return;
        };
        let s = m.entry(address.to_string()).or_default();
        if probe {
            s.probing = false;
        }
        if ok {
            s.consecutive_failures = 0;
            s.open_until = None;
            s.cooldown = Duration::ZERO;
            return;
        }
        s.consecutive_failures += 1;
        let now = Instant::now();
        if !probe && s.open_until.is_some_and(|t| t > now) {
            return;
        }
        if probe || s.consecutive_failures >= self.limits.breaker_failures {
            s.cooldown = if s.cooldown.is_zero() {
                self.limits.breaker_cooldown
            } else {
                (s.cooldown * 2).min(self.limits.breaker_max_cooldown)
            };
            s.open_until = Some(now + s.cooldown);
            tracing::warn!(target_address = %Loggable(address), failures = s.consecutive_failures, cooldown = ?s.cooldown, "circuit open: deliveries to this target wait");
        }
    }

    /// An attempt that never reached the target ends: if it was the probe of an open circuit,
    /// the next attempt probes.
    pub fn release_probe(&self, address: &str, probe: bool) {
        if !probe {
            return;
        }
        if let Ok(mut m) = self.map.lock()
            && let Some(s) = m.get_mut(address)
        {
            s.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        Targets::new(Limits {
            per_target_concurrency: 2,
            breaker_failures: 2,
            breaker_cooldown: Duration::from_secs(10),
            breaker_max_cooldown: Duration::from_secs(600),
            slack_interval: Duration::from_millis(50),
        })
    }

    /// (cool-down, open, probing) of a target.
    fn circuit(t: &Targets, address: &str) -> (Duration, bool, bool) {
        let m = t.map.lock().unwrap();
        let s = &m[address];
        (
            s.cooldown,
            s.open_until.is_some_and(|t| t > Instant::now()),
            s.probing,
        )
    }

    /// Let the cool-down of an open circuit pass.
    fn expire(t: &Targets, address: &str) {
        let mut m = t.map.lock().unwrap();
        m.get_mut(address).unwrap().open_until = Some(Instant::now() - Duration::from_millis(1));
    }

    #[test]
    fn a_claim_is_counted_at_once_only_below_the_concurrency_and_with_the_circuit_closed() {
        let t = targets();
        let a = "http://a/";
        assert!(t.count(a, Admit::AtOnce));
        assert!(t.count(a, Admit::AtOnce));
        assert!(!t.count(a, Admit::AtOnce), "at per_target_concurrency");
        assert!(t.count(a, Admit::Always), "a claim from the store");
        assert_eq!(t.held(a), 3);
        assert_eq!(
            t.claim_limits(3),
            ([(a.to_string(), 3)].into(), vec![a.to_string()])
        );
        t.uncount(a);
        t.uncount(a);
        assert!(t.count(a, Admit::AtOnce));
        t.note_outcome("http://c/", false, false);
        t.note_outcome("http://c/", false, false);
        assert!(!t.count("http://c/", Admit::AtOnce), "circuit open");
        assert!(t.claim_limits(8).1.contains(&"http://c/".to_string()));
        assert!(
            t.next_reopen()
                .is_some_and(|d| d <= Duration::from_secs(10))
        );
    }

    #[test]
    fn attempts_in_flight_when_the_circuit_opens_do_not_extend_it() {
        let t = targets();
        // 16 attempts were in flight to a blackholed target; they all time out
        for _ in 0..16 {
            t.note_outcome("http://a/", false, false);
        }
        assert_eq!(
            circuit(&t, "http://a/"),
            (Duration::from_secs(10), true, false)
        );
    }

    #[tokio::test]
    async fn one_probe_at_a_time_and_a_failed_probe_doubles_the_cooldown() {
        let t = targets();
        let a = "http://a/";
        let http = TargetKind::Http;
        t.note_outcome(a, false, false);
        t.note_outcome(a, false, false);
        assert!(t.gate(a, http, later(), &go()).await.is_err());
        expire(&t, a);
        assert_eq!(t.gate(a, http, later(), &go()).await, Ok(true));
        assert!(t.gate(a, http, later(), &go()).await.is_err());
        t.note_outcome(a, false, true);
        assert_eq!(circuit(&t, a), (Duration::from_secs(20), true, false));
        expire(&t, a);
        assert_eq!(t.gate(a, http, later(), &go()).await, Ok(true));
        t.note_outcome(a, true, true);
        assert_eq!(circuit(&t, a), (Duration::ZERO, false, false));
        assert_eq!(t.gate(a, http, later(), &go()).await, Ok(false));
    }

    /// A probe whose body could not be made (a Custom template's failure) says nothing about
    /// the target: the circuit stays as it was, and the next attempt probes.
    #[tokio::test]
    async fn a_probe_that_was_never_sent_leaves_the_circuit_as_it_was() {
        let t = targets();
        let a = "http://a/";
        t.note_outcome(a, false, false);
        t.note_outcome(a, false, false);
        expire(&t, a);
        assert_eq!(t.gate(a, TargetKind::Http, later(), &go()).await, Ok(true));
        let before = circuit(&t, a);
        t.release_probe(a, true);
        assert_eq!(circuit(&t, a), (before.0, before.1, false));
        assert_eq!(t.gate(a, TargetKind::Http, later(), &go()).await, Ok(true));
    }

    /// A Slack target whose next message probes, and waits for its pace: one message just
    /// went out, then the circuit opened and its cool-down passed.
    async fn slack_probe_next(t: &Targets) -> &'static str {
        let s = "https://hooks.slack.invalid/x";
        assert_eq!(
            t.gate(s, TargetKind::Slack, later(), &go()).await,
            Ok(false)
        );
        t.note_outcome(s, false, false);
        t.note_outcome(s, false, false);
        expire(t, s);
        s
    }

    /// A process that keeps running.
    fn go() -> CancellationToken {
        CancellationToken::new()
    }

    /// Regression: a Slack message waiting for its pace did not watch shutdown, so it was sent
    /// after the process began stopping (or outlived `shutdown_grace` in flight, and was sent
    /// again after restart). Stopping ends the wait at once: deferred, due now, its probe and
    /// the pace's turn left free.
    #[tokio::test(start_paused = true)]
    async fn stopping_ends_a_wait_for_the_slack_pace_at_once() {
        let t = Targets::new(Limits {
            slack_interval: Duration::from_secs(30),
            ..targets().limits
        });
        let s = slack_probe_next(&t).await;
        let stop = CancellationToken::new();
        let (gated, ()) = tokio::join!(t.gate(s, TargetKind::Slack, later(), &stop), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        });
        let Err(at) = gated else {
            panic!("sent while stopping: {gated:?}");
        };
        assert!(at <= Instant::now(), "due now");
        assert!(!circuit(&t, s).2, "the probe is free");
        assert!(
            t.map.lock().unwrap()[s].slack_next > Some(Instant::now()),
            "the turn is still the first message's"
        );
    }

    /// A start far enough away for any wait.
    fn later() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    /// Regression: a Slack message whose pace came after its claim's lease could still cover
    /// the attempt was sent all the same (and sent again by whoever took the lease over). It
    /// is deferred to its turn instead, without taking the turn, and a probe stays free.
    #[tokio::test]
    async fn a_slack_pace_past_the_lease_defers_without_taking_the_turn() {
        let t = targets();
        let s = "https://hooks.slack.invalid/x";
        assert_eq!(
            t.gate(s, TargetKind::Slack, later(), &go()).await,
            Ok(false)
        );
        let soon = Instant::now() + Duration::from_millis(5);
        let Err(until) = t.gate(s, TargetKind::Slack, soon, &go()).await else {
            panic!("sent past its lease");
        };
        assert!(until > soon);
        // the turn was not taken: the next message waits one interval, not two
        let started = Instant::now();
        assert_eq!(
            t.gate(s, TargetKind::Slack, later(), &go()).await,
            Ok(false)
        );
        assert!(
            started.elapsed() < Duration::from_millis(90),
            "one interval"
        );
        // a probe deferred by the pace leaves the circuit free for the next probe
        t.note_outcome(s, false, false);
        t.note_outcome(s, false, false);
        expire(&t, s);
        assert!(
            t.gate(s, TargetKind::Slack, Instant::now(), &go())
                .await
                .is_err()
        );
        assert!(!circuit(&t, s).2, "not probing");
    }

    #[tokio::test]
    async fn a_slack_probe_waiting_for_its_pace_stays_the_probe() {
        let t = targets();
        let s = slack_probe_next(&t).await;
        let started = Instant::now();
        assert_eq!(t.gate(s, TargetKind::Slack, later(), &go()).await, Ok(true));
        assert!(started.elapsed() >= Duration::from_millis(40), "paced");
        t.note_outcome(s, true, true);
        assert_eq!(circuit(&t, s), (Duration::ZERO, false, false));
    }
}
