//! Header hygiene between the client and the upstream: hop-by-hop headers dropped both ways
//! (RFC 9110 §7.6.1, plus those named in `Connection`), the client's `Host` passed on with
//! `X-Forwarded-Host/Proto/For`, the request id on every response.

use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{ClientConn, X_REQUEST_ID};

pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The client's host: the `Host` header, or the URI authority (HTTP/2).
pub(super) fn client_host(uri: &Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(header::HOST).cloned().or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

/// What the request going upstream says of the origin the client used: its
/// `X-Forwarded-Proto` and `X-Forwarded-Host` — wharf's own, or, with
/// `trust_forwarded_headers`, the load balancer's. Kept (two header values) for the rare
/// response whose `Location` must be pointed back at wharf.
pub(super) struct Forwarded {
    proto: Option<HeaderValue>,
    host: Option<HeaderValue>,
}

impl Forwarded {
    pub(super) fn of(upstream: &HeaderMap) -> Forwarded {
        Forwarded {
            proto: upstream.get(&X_FORWARDED_PROTO).cloned(),
            host: upstream.get(&X_FORWARDED_HOST).cloned(),
        }
    }

    /// The origin (`scheme://host`): the first of each list — so a client that reached a
    /// trusted load balancer over HTTPS is sent to `https://` — else the connection's scheme
    /// and the client's `host`.
    pub(super) fn origin(&self, host: Option<&HeaderValue>, conn: &ClientConn) -> Option<String> {
        fn first(v: &Option<HeaderValue>) -> Option<&str> {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
        }
        let scheme = match first(&self.proto) {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            Some(p) if p.eq_ignore_ascii_case("http") => "http",
            _ if conn.tls => "https",
            _ => "http",
        };
        // a bare `host[:port]`: never a path, user info or anything else into the Location
        let forwarded = first(&self.host).filter(|h| {
            !h.contains('@')
                && h.parse::<http::uri::Authority>()
                    .is_ok_and(|a| a.as_str() == *h)
        });
        let host = match forwarded {
            Some(h) => h,
            None => host?.to_str().ok()?,
        };
        Some(format!("{scheme}://{host}"))
    }
}

/// Remove hop-by-hop headers: the fixed list and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // most messages carry none: one pass over the names instead of a lookup per header
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| n != header::HOST && n != header::CONTENT_LENGTH)
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        &header::CONNECTION,
        &PROXY_CONNECTION,
        &KEEP_ALIVE,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(n);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == PROXY_CONNECTION
        || name == KEEP_ALIVE
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
}

/// Headers of a request going upstream.
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    client_host: Option<&HeaderValue>,
    conn: &ClientConn,
    request_id: &HeaderValue,
    trust_forwarded: bool,
) {
    strip_hop_by_hop(headers);
    headers.remove(header::EXPECT);
    if let Some(host) = client_host
        && headers.get(header::HOST) != Some(host)
    {
        headers.insert(header::HOST, host.clone());
    }
    // every line the client (and a trusted load balancer) sent, as one list, then the peer
    let mut lines = headers.get_all(&X_FORWARDED_FOR).iter();
    let xff = match (trust_forwarded, lines.next()) {
        (true, Some(first)) => {
            let mut list = first.as_bytes().to_vec();
            for line in lines {
                list.extend_from_slice(b", ");
                list.extend_from_slice(line.as_bytes());
            }
            list.extend_from_slice(b", ");
            list.extend_from_slice(conn.ip.as_bytes());
            HeaderValue::from_bytes(&list).ok()
        }
        _ => Some(conn.ip.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    let keep = |h: &HeaderName, headers: &HeaderMap| trust_forwarded && headers.contains_key(h);
    if !keep(&X_FORWARDED_PROTO, headers) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
        );
    }
    if !keep(&X_FORWARDED_HOST, headers) {
        match client_host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST.clone(), h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
}

/// Headers of a response going back to the client.
pub fn prepare_response_headers(headers: &mut HeaderMap, request_id: &HeaderValue) {
    strip_hop_by_hop(headers);
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ClientConn {
        ClientConn::new("127.0.0.9:4242".parse().unwrap(), false)
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_repeated_headers_kept() {
        let mut h = HeaderMap::new();
        for a in ["a/1", "b/2", "c/3", "d/4", "e/5", "f/6"] {
            h.append(header::ACCEPT, HeaderValue::from_static(a));
        }
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        let host = HeaderValue::from_static("wharf.local:8080");
        prepare_request_headers(
            &mut h,
            Some(&host),
            &conn(),
            &HeaderValue::from_static("rid"),
            false,
        );
        assert_eq!(h.get_all(header::ACCEPT).iter().count(), 6);
        for gone in [
            "connection",
            "x-private",
            "transfer-encoding",
            "expect",
            "keep-alive",
        ] {
            assert!(!h.contains_key(gone), "{gone} kept");
        }
        assert_eq!(h["authorization"], "Basic eDp5");
        assert_eq!(h["host"], "wharf.local:8080");
        assert_eq!(h["x-forwarded-host"], "wharf.local:8080");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-for"], "127.0.0.9");
        assert_eq!(h["x-request-id"], "rid");
    }

    /// regression: behind a trusted load balancer that ends TLS, a `Location` pointing back at
    /// wharf named `http://` and wharf's own host, not the `https://` origin the client used.
    #[test]
    fn the_client_origin_follows_trusted_forwarded_headers() {
        let origin = |sent: &[(&'static str, &'static str)], trust: bool| {
            let mut h = HeaderMap::new();
            for (k, v) in sent {
                h.append(*k, HeaderValue::from_static(v));
            }
            let host = HeaderValue::from_static("wharf.internal:8080");
            prepare_request_headers(
                &mut h,
                Some(&host),
                &conn(),
                &HeaderValue::from_static("r"),
                trust,
            );
            Forwarded::of(&h).origin(Some(&host), &conn())
        };
        let lb = [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "registry.example.com"),
        ];
        assert_eq!(
            origin(&lb, true).as_deref(),
            Some("https://registry.example.com")
        );
        // not trusted: what the client sent is replaced
        assert_eq!(
            origin(&lb, false).as_deref(),
            Some("http://wharf.internal:8080")
        );
        // a list: the first (the client-facing hop); nonsense falls back to the connection
        let listed = [
            ("x-forwarded-proto", "HTTPS, http"),
            ("x-forwarded-host", "a.example:443, b.internal"),
        ];
        assert_eq!(
            origin(&listed, true).as_deref(),
            Some("https://a.example:443")
        );
        let odd = [
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.example/path"),
        ];
        assert_eq!(
            origin(&odd, true).as_deref(),
            Some("http://wharf.internal:8080")
        );
        let userinfo = [("x-forwarded-host", "user@evil.example")];
        assert_eq!(
            origin(&userinfo, true).as_deref(),
            Some("http://wharf.internal:8080")
        );
    }

    /// regression: with two `X-Forwarded-For` lines (the client's, then the load balancer's)
    /// only the first went upstream: the address the load balancer saw was lost.
    #[test]
    fn every_forwarded_for_line_goes_upstream_when_trusted() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let host = HeaderValue::from_static("w");
        prepare_request_headers(
            &mut h,
            Some(&host),
            &conn(),
            &HeaderValue::from_static("r"),
            true,
        );
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["6.6.6.6, 203.0.113.9, 127.0.0.9"]);
    }

    #[test]
    fn forwarded_headers_from_clients_are_replaced_unless_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let host = HeaderValue::from_static("w");
        let mut untrusted = h.clone();
        prepare_request_headers(
            &mut untrusted,
            Some(&host),
            &conn(),
            &HeaderValue::from_static("r"),
            false,
        );
        assert_eq!(untrusted["x-forwarded-for"], "127.0.0.9");
        assert_eq!(untrusted["x-forwarded-proto"], "http");
        let mut trusted = h.clone();
        prepare_request_headers(
            &mut trusted,
            Some(&host),
            &conn(),
            &HeaderValue::from_static("r"),
            true,
        );
        assert_eq!(trusted["x-forwarded-for"], "6.6.6.6, 127.0.0.9");
        assert_eq!(trusted["x-forwarded-proto"], "https");
    }
}
