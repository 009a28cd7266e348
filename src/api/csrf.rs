//! Cross-site request forgery: a browser that has cached Basic credentials for wharf sends them
//! with every request any site makes it send. Every state-changing request (any method but
//! `GET`, `HEAD`, `OPTIONS`, `TRACE`) of the API and of the UI is therefore refused with 403
//! when
//!
//! - `Sec-Fetch-Site` is present and is neither `same-origin` nor `none` (a browser says the
//!   request comes from another site), or
//! - `Origin` is present and is not this server (`Host`, or the host of `external_url`);
//!   `Origin: null` is never this server;
//!
//! and an API request with a body is refused with 415 unless it is `Content-Type:
//! application/json` (what a cross-site form cannot send without a CORS preflight, which wharf
//! never grants) — except one authenticated with a Bearer token (the side endpoint's), which no
//! browser attaches on its own. Tools like curl send neither `Origin` nor `Sec-Fetch-Site` and
//! keep working.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};

use super::{ApiError, ApiState};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("cross-site request refused: Sec-Fetch-Site is {0:?}")]
    CrossSite(String),
    #[error("cross-site request refused: Origin {0:?} is not this server")]
    ForeignOrigin(String),
    #[error("Content-Type: a request body must be application/json")]
    NotJson,
}

impl Refused {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::CrossSite(_) | Refused::ForeignOrigin(_) => StatusCode::FORBIDDEN,
            Refused::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// Does the method change state?
pub fn changes_state(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// `host[:port]` lowercased with the port made explicit (`default_port` when absent).
fn authority(s: &str, default_port: u16) -> Option<(String, u16)> {
    let s = s.trim().to_ascii_lowercase();
    // [v6]:port, [v6], host:port, host
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((format!("[{host}]"), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((s, default_port)),
    }
}

/// Is `origin` (`scheme://host[:port]`) this server, whose `Host` is `host` and whose external
/// host is `external_host`?
fn same_origin(origin: &str, host: Option<&str>, external_host: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    let (Some(o_host), Some(o_port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let mine = (o_host.to_ascii_lowercase(), o_port);
    let matches = |a: &str| authority(a, o_port).is_some_and(|x| x == mine);
    host.is_some_and(matches) || matches(external_host)
}

/// Check a state-changing request; `api`: it is an API route (bodies must be JSON).
pub fn check(
    method: &Method,
    headers: &HeaderMap,
    has_body: bool,
    api: bool,
    external_host: &str,
) -> Result<(), Refused> {
    if !changes_state(method) {
        return Ok(());
    }
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    if let Some(site) = text("sec-fetch-site") {
        let site = site.trim().to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Err(Refused::CrossSite(site));
        }
    }
    if let Some(origin) = text("origin") {
        let host = headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok());
        if !same_origin(&origin, host, external_host) {
            return Err(Refused::ForeignOrigin(origin));
        }
    }
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
    if api && has_body && !bearer {
        let json = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(Refused::NotJson);
        }
    }
    Ok(())
}

/// Does the request carry a body (a declared non-zero length, or one of unknown length)?
pub fn has_body(req: &Request) -> bool {
    use axum::body::HttpBody as _;
    req.body().size_hint().exact() != Some(0)
}

/// The API's middleware: refusals as the API's JSON errors.
pub async fn layer(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let Ok(app) = s.app() else {
        return next.run(req).await;
    };
    let body = has_body(&req);
    match check(
        req.method(),
        req.headers(),
        body,
        true,
        &app.config.external_host(),
    ) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let code = match e {
                Refused::NotJson => "UNSUPPORTED_MEDIA_TYPE",
                Refused::CrossSite(_) | Refused::ForeignOrigin(_) => "FORBIDDEN",
            };
            ApiError::new(e.status(), code, e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const EXT: &str = "wharf.example.com";

    #[test]
    fn curl_and_same_origin_pass() {
        let post = Method::POST;
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(check(&post, &headers(&[json]), true, true, EXT), Ok(()));
        let h = headers(&[
            ("host", "127.0.0.1:5000"),
            ("origin", "http://127.0.0.1:5000"),
            ("sec-fetch-site", "same-origin"),
            json,
        ]);
        assert_eq!(check(&post, &h, true, true, EXT), Ok(()));
        // the default port is implied on either side
        let h = headers(&[("host", "wharf.local"), ("origin", "http://wharf.local:80")]);
        assert_eq!(check(&post, &h, false, true, EXT), Ok(()));
        // behind a proxy: the external host
        let h = headers(&[
            ("host", "10.0.0.5:5000"),
            ("origin", "https://wharf.example.com"),
        ]);
        assert_eq!(check(&post, &h, false, true, EXT), Ok(()));
        // typed into the address bar
        let h = headers(&[("sec-fetch-site", "none")]);
        assert_eq!(check(&post, &h, false, false, EXT), Ok(()));
    }

    #[test]
    fn other_sites_are_refused() {
        let post = Method::POST;
        for site in ["cross-site", "same-site"] {
            let h = headers(&[("sec-fetch-site", site)]);
            assert!(matches!(
                check(&post, &h, false, false, EXT),
                Err(Refused::CrossSite(_))
            ));
        }
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:5001",
            "http://localhost:5000",
        ] {
            let h = headers(&[("host", "127.0.0.1:5000"), ("origin", origin)]);
            assert!(
                matches!(
                    check(&Method::DELETE, &h, false, false, EXT),
                    Err(Refused::ForeignOrigin(_))
                ),
                "{origin}"
            );
        }
        // reading is never refused
        let h = headers(&[("sec-fetch-site", "cross-site"), ("origin", "http://evil")]);
        assert_eq!(check(&Method::GET, &h, false, true, EXT), Ok(()));
    }

    #[test]
    fn api_bodies_must_be_json_unless_bearer() {
        let post = Method::PUT;
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let h = match ct {
                Some(c) => headers(&[("content-type", c)]),
                None => HeaderMap::new(),
            };
            assert_eq!(check(&post, &h, true, true, EXT), Err(Refused::NotJson));
            // without a body, or on a UI route (forms), no Content-Type rule
            assert_eq!(check(&post, &h, false, true, EXT), Ok(()));
            assert_eq!(check(&post, &h, true, false, EXT), Ok(()));
        }
        let h = headers(&[("authorization", "Bearer t0ken")]);
        assert_eq!(check(&Method::POST, &h, true, true, EXT), Ok(()));
    }
}
