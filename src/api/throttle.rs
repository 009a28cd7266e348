//! Failed-login throttle of the API: a token bucket per client address.
//!
//! Every API request that carries credentials (`Authorization`) and is answered 401 takes one
//! token from its client's bucket; a bucket holds `users.failed_login_burst` tokens and gets one
//! back every `users.failed_login_interval`. While a bucket is empty, requests with credentials
//! from that address get 429 with `Retry-After` before any password is checked (right ones too:
//! an attacker must not learn that a guess was right). Successful logins give nothing back.
//! Registry paths (`/v2/…`) and chart paths never pass here: the registry does its own
//! authentication.
//!
//! The client address is the TCP peer, or with `trust_forwarded_headers` the last address of
//! `X-Forwarded-For` (the one the trusted load balancer appended; the first one is whatever the
//! client wrote). IPv6 clients are counted per /64 (what one host usually has). At most
//! [`MAX_TRACKED`] addresses are tracked; full buckets are forgotten first.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

use super::{ApiError, ApiState};
use crate::forward::ClientConn;

/// Most client addresses whose buckets are kept.
pub const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The throttle.
#[derive(Debug)]
pub struct LoginThrottle {
    burst: f64,
    interval: Duration,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl LoginThrottle {
    /// `burst` failures at once, then one more per `interval`.
    pub fn new(burst: u32, interval: Duration) -> Self {
        LoginThrottle {
            burst: f64::from(burst.max(1)),
            interval: interval.max(Duration::from_millis(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let gained = now.duration_since(b.at).as_secs_f64() / self.interval.as_secs_f64();
        Bucket {
            tokens: (b.tokens + gained).min(self.burst),
            at: now,
        }
    }

    /// `Ok` when `ip` may try to log in now, else how long until it may.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(key(ip), Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Ok(buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let Some(b) = buckets.get(&ip) else {
            return Ok(());
        };
        let b = self.refilled(*b, now);
        if b.tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.interval.mul_f64(1.0 - b.tokens))
        }
    }

    /// Count a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        self.failed_at(key(ip), Instant::now())
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) {
        let Ok(mut buckets) = self.buckets.lock() else {
            return;
        };
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            // forget the addresses that are back to a full bucket; if none is, the oldest
            buckets.retain(|_, b| self.refilled(*b, now).tokens < self.burst);
            if buckets.len() >= MAX_TRACKED
                && let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k)
            {
                buckets.remove(&oldest);
            }
        }
        let fresh = Bucket {
            tokens: self.burst,
            at: now,
        };
        let b = buckets.entry(ip).or_insert(fresh);
        let mut r = self.refilled(*b, now);
        r.tokens = (r.tokens - 1.0).max(0.0);
        *b = r;
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

/// The bucket an address counts in: IPv4 itself (also when IPv4-mapped), IPv6 per /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The middleware: 429 while the client's bucket is empty, count 401s.
pub async fn layer(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let Ok(app) = s.app() else {
        return next.run(req).await;
    };
    let has_credentials = req.headers().contains_key(http::header::AUTHORIZATION);
    let conn = req.extensions().get::<ClientConn>().cloned();
    let (true, Some(conn)) = (has_credentials, conn) else {
        return next.run(req).await;
    };
    let ip = conn.client_ip(req.headers(), app.config.trust_forwarded_headers);
    if let Err(wait) = app.login_throttle.check(ip) {
        app.metrics.login_throttled.inc();
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let secs = secs.max(1);
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            format!("too many failed logins from this address; retry in {secs} s"),
        )
        .into_response();
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED {
        app.metrics.login_failures.inc();
        app.login_throttle.failed(ip);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_bucket_empties_and_refills() {
        let t = LoginThrottle::new(3, Duration::from_secs(10));
        let a = ip("192.0.2.1");
        let now = Instant::now();
        for _ in 0..3 {
            assert!(t.check_at(a, now).is_ok());
            t.failed_at(a, now);
        }
        let wait = t.check_at(a, now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        // another address is not affected
        assert!(t.check_at(ip("192.0.2.2"), now).is_ok());
        // one token back after the interval, and only one
        let later = now + Duration::from_secs(10);
        assert!(t.check_at(a, later).is_ok());
        t.failed_at(a, later);
        assert!(t.check_at(a, later).is_err());
        assert_eq!(
            t.check_at(a, later + Duration::from_secs(4)).unwrap_err(),
            Duration::from_secs(6)
        );
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        let t = LoginThrottle::new(1, Duration::from_secs(60));
        t.failed(ip("2001:db8:1:2::1"));
        assert!(t.check(ip("2001:db8:1:2::ffff")).is_err());
        assert!(t.check(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let t = LoginThrottle::new(2, Duration::from_secs(1));
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            t.failed_at(IpAddr::V4(i.into()), now);
        }
        assert!(t.tracked() <= MAX_TRACKED);
    }

    #[test]
    fn forwarded_address_is_the_last_one_and_only_when_trusted() {
        let conn = ClientConn::new("10.0.0.5:1234".parse().unwrap(), false);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9"),
        );
        assert_eq!(conn.client_ip(&h, true), ip("203.0.113.9"));
        assert_eq!(conn.client_ip(&h, false), ip("10.0.0.5"));
        // lines are one list: the last line's last address
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        assert_eq!(conn.client_ip(&h, true), ip("198.51.100.1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(conn.client_ip(&h, true), ip("10.0.0.5"));
    }
}
