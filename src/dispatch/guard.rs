//! SSRF guard: webhook targets may not resolve to loopback, private, link-local (cloud metadata
//! at 169.254.169.254 included), CGNAT, multicast, broadcast, documentation/benchmark or
//! unspecified addresses, unless `notification.allowed_target_networks` covers them. IPv6 forms
//! that carry an IPv4 address (IPv4-mapped, IPv4-compatible, SIIT, NAT64, 6to4, Teredo) are
//! judged by that IPv4 address; site-local `fec0::/10` is private.
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
    #[error("{url:?} is not a URL: {source}")]
    NotUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("{0}")]
    Url(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("cannot resolve {host}: no address")]
    NoAddress { host: String },
    #[error(transparent)]
    Blocked(#[from] Blocked),
}

/// The URL a target's address stands for, as Harbor reads it: an address without a scheme
/// (`hooks.example/x`, `host:8080/x`) is `http://`; a scheme other than `http` and `https`
/// is refused. The address itself is kept as it was given.
pub fn target_url(address: &str) -> Result<reqwest::Url, TargetError> {
    let address = address.trim();
    let url = match address.find("://") {
        Some(i) => {
            let scheme = &address[..i];
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(TargetError::Url(format!(
                    "{address:?} must be http:// or https://"
                )));
            }
            reqwest::Url::parse(address)
        }
        None => reqwest::Url::parse(&format!("http://{address}")),
    };
    url.map_err(|source| TargetError::NotUrl {
        url: address.to_string(),
        source,
    })
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

/// The IPv4 address in the last 32 bits of `ip`.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that carry an IPv4 address: a forbidden one stays forbidden in any of them.
    let embedded = if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        // IPv4-mapped ::ffff:a.b.c.d
        Some(low_v4(ip))
    } else if s[..6] == [0; 6] {
        // IPv4-compatible ::a.b.c.d (deprecated, RFC 4291)
        Some(low_v4(ip))
    } else if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        // IPv4-translated ::ffff:0:a.b.c.d (SIIT, RFC 2765)
        Some(low_v4(ip))
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052)
        Some(low_v4(ip))
    } else if s[0] == 0x2002 {
        // 6to4 2002:AABB:CCDD::/48 (RFC 3056)
        let o = ip.octets();
        Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else if s[0] == 0x2001 && s[1] == 0 {
        // Teredo 2001::/32 (RFC 4380): the client's address, inverted, in the last 32 bits
        let o = ip.octets();
        Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]))
    } else {
        None
    };
    if let Some(v4) = embedded {
        return v4_reason(v4);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): translated to a network of the operator's
        Some("private (local-use NAT64)")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("private (unique local)")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Some("site-local (deprecated, private)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("documentation")
    } else if s[0] == 0x0100 && s[1..4] == [0; 3] {
        Some("discard-only")
    } else if s[0] == 0x2001
        && ((s[1] == 2 && s[2] == 0) || matches!(s[1] & 0xfff0, 0x0010 | 0x0020))
    {
        // 2001:2::/48 benchmarking, 2001:10::/28 ORCHID, 2001:20::/28 ORCHIDv2
        Some("special-purpose")
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
        let u = target_url(url)?;
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
                source: Arc::new(e),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(TargetError::NoAddress {
                host: host.to_string(),
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

    /// Every address form the guard knows, with the reason it is refused (`None`: allowed).
    const TABLE: &[(&str, Option<&str>)] = &[
        ("127.0.0.1", Some("loopback")),
        ("10.0.0.1", Some("private")),
        ("172.16.5.4", Some("private")),
        ("192.168.1.1", Some("private")),
        ("169.254.169.254", Some("link-local")),
        ("100.64.0.1", Some("shared address space (CGNAT)")),
        ("0.0.0.0", Some("unspecified")),
        ("0.1.2.3", Some("unspecified")),
        ("224.0.0.1", Some("multicast or reserved")),
        ("255.255.255.255", Some("multicast or reserved")),
        ("192.0.0.8", Some("special-purpose")),
        ("198.18.0.1", Some("special-purpose")),
        ("203.0.113.9", Some("documentation")),
        ("93.184.216.34", None),
        ("1.1.1.1", None),
        ("100.128.0.1", None),
        ("::1", Some("loopback")),
        ("::", Some("unspecified")),
        ("fd00::1", Some("private (unique local)")),
        ("fe80::1", Some("link-local")),
        ("ff02::1", Some("multicast")),
        ("2001:db8::1", Some("documentation")),
        ("2606:4700:4700::1111", None),
        // IPv4-mapped
        ("::ffff:127.0.0.1", Some("loopback")),
        ("::ffff:169.254.169.254", Some("link-local")),
        ("::ffff:8.8.8.8", None),
        // IPv4-compatible (deprecated)
        ("::127.0.0.1", Some("loopback")),
        ("::10.1.2.3", Some("private")),
        ("::169.254.169.254", Some("link-local")),
        // IPv4-translated (SIIT)
        ("::ffff:0:7f00:1", Some("loopback")),
        ("::ffff:0:a9fe:a9fe", Some("link-local")),
        ("::ffff:0:808:808", None),
        // NAT64
        ("64:ff9b::a00:1", Some("private")),
        ("64:ff9b::7f00:1", Some("loopback")),
        ("64:ff9b::808:808", None),
        ("64:ff9b:1::1", Some("private (local-use NAT64)")),
        // 6to4
        ("2002:7f00:1::", Some("loopback")),
        ("2002:a9fe:a9fe::1", Some("link-local")),
        ("2002:c0a8:101:1::1", Some("private")),
        ("2002:808:808::1", None),
        // Teredo: client 127.0.0.1 inverted is 80ff:fffe; 10.0.0.1 is f5ff:fffe
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some("loopback")),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", Some("private")),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),
        // site-local (deprecated)
        ("fec0::1", Some("site-local (deprecated, private)")),
        ("feff:ffff::1", Some("site-local (deprecated, private)")),
        // other special-purpose IPv6
        ("100::1", Some("discard-only")),
        ("2001:2::1", Some("special-purpose")),
        ("2001:10::1", Some("special-purpose")),
        ("2001:20::1", Some("special-purpose")),
        ("2001:4860:4860::8888", None),
    ];

    #[test]
    fn every_address_form_gets_its_verdict() {
        let g = Guard::default();
        for (addr, want) in TABLE {
            let got = g.check(ip(addr)).err().map(|b| b.reason);
            assert_eq!(got, *want, "{addr}");
        }
    }

    #[tokio::test]
    async fn literal_ipv6_urls_of_embedded_ipv4_forms_are_refused() {
        let g = Guard::default();
        for url in [
            "http://[::127.0.0.1]/",
            "http://[fec0::1]/",
            "http://[2002:7f00:1::]/",
            "http://[::ffff:0:7f00:1]:8080/hook",
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
        ] {
            assert!(
                matches!(g.check_url(url).await, Err(TargetError::Blocked(_))),
                "{url} allowed"
            );
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
        let not_url = g.check_url("not a url").await.unwrap_err();
        assert!(matches!(not_url, TargetError::NotUrl { .. }), "{not_url:?}");
        assert_eq!(
            not_url.to_string(),
            "\"not a url\" is not a URL: invalid international domain name"
        );
        assert!(std::error::Error::source(&not_url).is_some());
        // no scheme: http, as Harbor
        assert!(matches!(
            g.check_url("169.254.169.254/latest").await,
            Err(TargetError::Blocked(_))
        ));
    }

    /// An address without a scheme is `http://` (Harbor's reading), with or without a port;
    /// only http and https are schemes.
    #[test]
    fn an_address_without_a_scheme_is_http() {
        let url = |a: &str| target_url(a).map(|u| u.to_string());
        assert_eq!(url("hooks.example/x").unwrap(), "http://hooks.example/x");
        assert_eq!(
            url("hooks.example:8080/x?a=1").unwrap(),
            "http://hooks.example:8080/x?a=1"
        );
        assert_eq!(url(" 127.0.0.1:9 ").unwrap(), "http://127.0.0.1:9/");
        assert_eq!(
            url("https://hooks.example/x").unwrap(),
            "https://hooks.example/x"
        );
        assert_eq!(
            url("HTTPS://hooks.example/").unwrap(),
            "https://hooks.example/"
        );
        assert!(matches!(
            target_url("ftp://hooks.example/"),
            Err(TargetError::Url(_))
        ));
        assert!(matches!(
            target_url("javascript://x"),
            Err(TargetError::Url(_))
        ));
    }
}
