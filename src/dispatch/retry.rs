//! Retry timing: a pure function of the attempt number, pinned by tests.
//!
//! Delay before retry `n` (1-based) = `initial × multiplierⁿ⁻¹`, capped at `max`, then spread
//! by ±`jitter` (a fraction) so that deliveries failing together do not retry together. A
//! `Retry-After` from the target (seconds or an HTTP date) replaces the computed delay when it
//! is longer, up to `notification.retry_after_max`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential backoff with a cap and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Delay before the first retry.
    #[serde(default = "initial", with = "crate::config::duration")]
    pub initial: Duration,
    /// Each further retry waits this many times longer.
    #[serde(default = "multiplier")]
    pub multiplier: f64,
    /// No delay is longer than this.
    #[serde(default = "max", with = "crate::config::duration")]
    pub max: Duration,
    /// Random spread, a fraction of the delay (0.2 = ±20 %).
    #[serde(default = "jitter")]
    pub jitter: f64,
}

fn initial() -> Duration {
    Duration::from_secs(5)
}
fn multiplier() -> f64 {
    3.0
}
fn max() -> Duration {
    Duration::from_secs(3600)
}
fn jitter() -> f64 {
    0.2
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: initial(),
            multiplier: multiplier(),
            max: max(),
            jitter: jitter(),
        }
    }
}

impl Backoff {
    /// Checks serde cannot express: `Err((field, reason))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.initial.is_zero() {
            return Err(("initial", "must be greater than 0".into()));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err((
                "multiplier",
                format!("{} must be a number ≥ 1", self.multiplier),
            ));
        }
        if self.max < self.initial {
            return Err(("max", "must not be shorter than initial".into()));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(("jitter", format!("{} must be in [0, 1)", self.jitter)));
        }
        Ok(())
    }

    /// Delay before retry `retry` (1-based) with `unit` a uniform sample in [0, 1) for the
    /// jitter (0.5 = no spread).
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let exp = self.multiplier.powi(retry.saturating_sub(1).min(64) as i32);
        let base = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base * spread).max(0.0))
    }

    /// The delays of retries 1..=n without jitter (for docs and tests).
    pub fn schedule(&self, n: u32) -> Vec<Duration> {
        (1..=n).map(|i| self.delay(i, 0.5)).collect()
    }
}

/// Parse a `Retry-After` value: delta seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_parse(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    let t = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = u64::try_from(t.timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The delay before the next attempt: the backoff, or a longer `Retry-After` up to `cap`.
pub fn next_delay(
    backoff: &Backoff,
    retry: u32,
    unit: f64,
    retry_after: Option<Duration>,
    cap: Duration,
) -> Duration {
    let computed = backoff.delay(retry, unit);
    match retry_after {
        Some(ra) => computed.max(ra.min(cap)),
        None => computed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_pinned() {
        let b = Backoff::default();
        let secs: Vec<f64> = b.schedule(6).iter().map(|d| d.as_secs_f64()).collect();
        assert_eq!(secs, vec![5.0, 15.0, 45.0, 135.0, 405.0, 1215.0]);
        assert_eq!(b.delay(9, 0.5), Duration::from_secs(3600), "capped at max");
        assert_eq!(b.delay(1000, 0.5), Duration::from_secs(3600), "no overflow");
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let b = Backoff::default();
        assert_eq!(b.delay(2, 0.0), Duration::from_secs(12));
        assert_eq!(b.delay(2, 1.0), Duration::from_secs(18));
        let none = Backoff { jitter: 0.0, ..b };
        assert_eq!(none.delay(2, 0.0), Duration::from_secs(15));
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        let cap = Duration::from_secs(600);
        assert_eq!(
            next_delay(&b, 1, 0.5, Some(Duration::from_secs(60)), cap),
            Duration::from_secs(60)
        );
        assert_eq!(
            next_delay(&b, 1, 0.5, Some(Duration::from_secs(1)), cap),
            Duration::from_secs(5)
        );
        assert_eq!(
            next_delay(&b, 1, 0.5, Some(Duration::from_secs(86400)), cap),
            cap
        );
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn validation() {
        assert!(Backoff::default().validate().is_ok());
        assert_eq!(
            Backoff {
                multiplier: 0.5,
                ..Backoff::default()
            }
            .validate()
            .unwrap_err()
            .0,
            "multiplier"
        );
        assert_eq!(
            Backoff {
                jitter: 1.0,
                ..Backoff::default()
            }
            .validate()
            .unwrap_err()
            .0,
            "jitter"
        );
        assert_eq!(
            Backoff {
                max: Duration::from_secs(1),
                ..Backoff::default()
            }
            .validate()
            .unwrap_err()
            .0,
            "max"
        );
    }
}
