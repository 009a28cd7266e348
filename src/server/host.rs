//! The request's `Host`: exactly one, a well-formed `host[:port]`, agreeing with the request
//! target's authority (absolute form, HTTP/2's `:authority`); HTTP/1.0 without one is addressed
//! to `external_url`. Everything downstream (the upstream's `Host`, `X-Forwarded-Host`, the
//! links in answers) relies on it.

use http::HeaderValue;

/// Why a request's `Host` is refused (RFC 9112 §3.2, RFC 9113 §8.3.1): 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the request has no Host header")]
    Missing,
    #[error("the request has more than one Host header")]
    Duplicate,
    #[error("the Host header is not a host name or address with an optional port")]
    Invalid,
    #[error("the Host header and the request's :authority differ")]
    Mismatch,
}

/// Is `s` a `host[:port]` (RFC 3986 authority without user info)?
fn is_host_and_port(s: &str) -> bool {
    if s.is_empty() || s.contains('@') || s.ends_with(':') {
        return false;
    }
    // the usual case, a name or IPv4 address with an optional port, without a parse
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return port
            .is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    }
    match s.parse::<http::uri::Authority>() {
        Ok(a) => {
            // the port, when there is one, must be a TCP port (http's parser lets `:99999` by)
            let after_host = match s.rfind(']') {
                Some(i) => &s[i + 1..],
                None => s.rfind(':').map_or("", |i| &s[i..]),
            };
            let port_ok = match after_host.strip_prefix(':') {
                Some(p) => p.parse::<u16>().is_ok(),
                None => after_host.is_empty(),
            };
            !a.host().is_empty() && port_ok
        }
        Err(_) => false,
    }
}

/// Leave exactly one valid `Host` header: the authority the client addressed. HTTP/1.1 needs
/// one `Host` (an absolute-form target's authority replaces it); HTTP/2 and later use
/// `:authority` (a `Host` beside it must be the same); an HTTP/1.0 request without one is
/// taken as addressed to `fallback` (the host of `external_url`). Anything else is refused, so
/// the registry never builds a `Location` from a host the client did not validly name (or,
/// without one, from its own address).
pub fn normalize_host(
    headers: &mut http::HeaderMap,
    uri: &http::Uri,
    version: http::Version,
    fallback: impl FnOnce() -> String,
) -> Result<(), HostError> {
    let mut values = headers.get_all(http::header::HOST).iter();
    let first = values.next().cloned();
    if values.next().is_some() {
        return Err(HostError::Duplicate);
    }
    let host = match &first {
        Some(v) => {
            let s = v.to_str().map_err(|_| HostError::Invalid)?;
            if !is_host_and_port(s) {
                return Err(HostError::Invalid);
            }
            Some(s)
        }
        None => None,
    };
    let authority = uri.authority().map(|a| a.as_str());
    if let Some(a) = authority
        && !is_host_and_port(a)
    {
        return Err(HostError::Invalid);
    }
    let chosen = if version >= http::Version::HTTP_2 {
        match (host, authority) {
            (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => return Err(HostError::Mismatch),
            (_, Some(a)) => a,
            // the header alone: already the one Host, left as it is
            (Some(_), None) => return Ok(()),
            (None, None) => return Err(HostError::Missing),
        }
    } else {
        match (host, authority) {
            (None, _) if version == http::Version::HTTP_11 => return Err(HostError::Missing),
            // absolute-form: its authority wins (RFC 9112 §3.2.2)
            (_, Some(a)) => a,
            (Some(_), None) => return Ok(()),
            // HTTP/1.0 without Host: the external URL's host (computed only then)
            (None, None) => &fallback(),
        }
    };
    let value = HeaderValue::from_str(chosen).map_err(|_| HostError::Invalid)?;
    headers.insert(http::header::HOST, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version;

    fn host(
        hosts: &[&str],
        uri: &str,
        version: Version,
    ) -> (Result<(), HostError>, Option<String>) {
        let mut h = http::HeaderMap::new();
        for v in hosts {
            h.append(http::header::HOST, HeaderValue::from_str(v).unwrap());
        }
        let r = normalize_host(&mut h, &uri.parse().unwrap(), version, || {
            "wharf.example:443".to_string()
        });
        let got = h
            .get(http::header::HOST)
            .map(|v| v.to_str().unwrap().to_string());
        (r, got)
    }

    // Hardening 7: invalid, missing or repeated Host headers are refused.
    #[test]
    fn host_headers_are_one_valid_authority() {
        use HostError::*;
        let v11 = Version::HTTP_11;
        for (hosts, uri, version, want) in [
            (&["wharf:8080"][..], "/v2/", v11, Ok("wharf:8080")),
            (&["Wharf.Example"][..], "/v2/", v11, Ok("Wharf.Example")),
            (&["127.0.0.1:5000"][..], "/v2/", v11, Ok("127.0.0.1:5000")),
            (&["[::1]:8080"][..], "/v2/", v11, Ok("[::1]:8080")),
            (&["evil.com/phish?"][..], "/v2/", v11, Err(Invalid)),
            (&["evil.com#x"][..], "/v2/", v11, Err(Invalid)),
            (&["user@evil.com"][..], "/v2/", v11, Err(Invalid)),
            (&["evil.com:"][..], "/v2/", v11, Err(Invalid)),
            (&["evil.com:99999"][..], "/v2/", v11, Err(Invalid)),
            (&["evil.com:http"][..], "/v2/", v11, Err(Invalid)),
            (&["evil.com:+80"][..], "/v2/", v11, Err(Invalid)),
            (&["evil.com:80:80"][..], "/v2/", v11, Err(Invalid)),
            (&["wharf_1:80"][..], "/v2/", v11, Ok("wharf_1:80")),
            (&["10.0.0.1"][..], "/v2/", v11, Ok("10.0.0.1")),
            (&["a b"][..], "/v2/", v11, Err(Invalid)),
            (&[""][..], "/v2/", v11, Err(Invalid)),
            (&[][..], "/v2/", v11, Err(Missing)),
            (&["a", "b"][..], "/v2/", v11, Err(Duplicate)),
            (&["a", "a"][..], "/v2/", v11, Err(Duplicate)),
            // absolute-form: the target's authority wins, a Host is still required
            (
                &["other"][..],
                "http://wharf:8080/v2/",
                v11,
                Ok("wharf:8080"),
            ),
            (&[][..], "http://wharf:8080/v2/", v11, Err(Missing)),
            // HTTP/1.0 without Host: addressed to external_url
            (&[][..], "/v2/", Version::HTTP_10, Ok("wharf.example:443")),
            (&["w"][..], "/v2/", Version::HTTP_10, Ok("w")),
            // HTTP/2: :authority, a Host beside it must agree
            (
                &[][..],
                "https://wharf:8443/v2/",
                Version::HTTP_2,
                Ok("wharf:8443"),
            ),
            (
                &["WHARF:8443"][..],
                "https://wharf:8443/v2/",
                Version::HTTP_2,
                Ok("wharf:8443"),
            ),
            (
                &["evil.com"][..],
                "https://wharf:8443/v2/",
                Version::HTTP_2,
                Err(Mismatch),
            ),
            (&["w"][..], "/v2/", Version::HTTP_2, Ok("w")),
            (&[][..], "/v2/", Version::HTTP_2, Err(Missing)),
        ] {
            let (r, got) = host(hosts, uri, version);
            match want {
                Ok(h) => {
                    assert_eq!(r, Ok(()), "{hosts:?} {uri} {version:?}");
                    assert_eq!(got.as_deref(), Some(h), "{hosts:?} {uri} {version:?}");
                }
                Err(e) => assert_eq!(r, Err(e), "{hosts:?} {uri} {version:?}"),
            }
        }
    }
}
