//! SSRF guard: webhook targets may not resolve to loopback, private, link-local (cloud metadata
//! at 169.254.169.254 included), CGNAT, multicast, broadcast, documentation/benchmark or
//! unspecified addresses, unless `notification.allowed_target_networks` covers them.
//!
//! It is checked when a policy is saved or tested, and again at delivery time on the addresses
//! DNS actually returned ([`GuardedResolver`]), so a name that later resolves elsewhere is
//! refused too. Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// A refused address.
#[derive(Debug, Clone, thiserror::Error)]
#[error("target address {ip} is {reason} and not in notification.allowed_target_networks")]
pub struct Blocked {
    pub ip: IpAddr,
    pub reason: &'static str,
}

/// Why a URL cannot be a webhook target.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetError {
    #[error("{0}")]
    Url(String),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error(transparent)]
    Blocked(#[from] Blocked),
}

/// The guard: which special-purpose networks are allowed anyway.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allowed: Vec<IpNet>,
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared address space (CGNAT)")
    } else if ip.is_multicast() || o[0] >= 240 {
        Some("multicast or reserved")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if (o[0] == 192 && o[1] == 0 && o[2] == 0) || (o[0] == 198 && (o[1] & 0xfe) == 18) {
        Some("special-purpose")
    } else if ip.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    let s = ip.segments();
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("private (unique local)")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("documentation")
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64: check the embedded IPv4 address
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        v4_reason(v4)
    } else {
        None
    }
}

impl Guard {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Guard { allowed }
    }

    /// Ok when `ip` is an ordinary public address, or allowed by configuration.
    pub fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        let reason = match ip {
            IpAddr::V4(v4) => v4_reason(v4),
            IpAddr::V6(v6) => v6_reason(v6),
        };
        match reason {
            None => Ok(()),
            Some(_) if self.allowed.iter().any(|n| n.contains(&ip)) => Ok(()),
            Some(reason) => Err(Blocked { ip, reason }),
        }
    }

    /// Check a target URL: scheme, host, and every address its host resolves to.
    pub async fn check_url(&self, url: &str) -> Result<(), TargetError> {
        let u = reqwest::Url::parse(url)
            .map_err(|e| TargetError::Url(format!("{url:?} is not a URL: {e}")))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(TargetError::Url(format!(
                "{url:?} must be http:// or https://"
            )));
        }
        let host = u
            .host_str()
            .ok_or_else(|| TargetError::Url(format!("{url:?} has no host")))?;
        let port = u.port_or_known_default().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(self.check(ip)?);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| TargetError::Resolve {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(TargetError::Resolve {
                host: host.to_string(),
                reason: "no address".into(),
            });
        }
        for a in addrs {
            self.check(a.ip())?;
        }
        Ok(())
    }
}

/// A DNS resolver for the webhook client that drops refused addresses (and fails when none
/// is left), so the connection can only go where the guard allows.
#[derive(Clone)]
pub struct GuardedResolver {
    guard: Arc<Guard>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<Guard>) -> Self {
        Self { guard }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_block = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match guard.check(a.ip()) {
                    Ok(()) => true,
                    Err(b) => {
                        first_block.get_or_insert(b);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match first_block {
                    Some(b) => Box::new(b),
                    None => format!("{host}: no address").into(),
                };
                return Err(err);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_special_purpose_addresses() {
        let g = Guard::default();
        for bad in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            assert!(g.check(ip(bad)).is_err(), "{bad} allowed");
        }
        for good in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "100.128.0.1",
        ] {
            assert!(g.check(ip(good)).is_ok(), "{good} refused");
        }
    }

    #[test]
    fn allow_list_opens_exactly_its_networks() {
        let g = Guard::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ]);
        assert!(g.check(ip("127.0.0.1")).is_ok());
        assert!(g.check(ip("10.1.2.3")).is_ok());
        assert!(g.check(ip("10.2.0.1")).is_err());
        assert!(g.check(ip("169.254.169.254")).is_err());
        assert!(g.check(ip("::1")).is_err());
    }

    #[tokio::test]
    async fn urls_are_checked_on_their_resolved_addresses() {
        let g = Guard::default();
        assert!(matches!(
            g.check_url("http://169.254.169.254/latest").await,
            Err(TargetError::Blocked(_))
        ));
        assert!(matches!(
            g.check_url("http://[::1]:8080/").await,
            Err(TargetError::Blocked(_))
        ));
        assert!(matches!(
            g.check_url("http://localhost:9/").await,
            Err(TargetError::Blocked(_))
        ));
        assert!(matches!(
            g.check_url("ftp://example.com/").await,
            Err(TargetError::Url(_))
        ));
        assert!(matches!(
            g.check_url("not a url").await,
            Err(TargetError::Url(_))
        ));
    }
}
