//! The webhook HTTP client: one POST per attempt, its outcome as data (never an `Err`).
//!
//! Every request carries the format's Content-Type, `Authorization: <auth_header>` when set,
//! the Standard Webhooks headers `webhook-id` (the event id: the same on every attempt),
//! `webhook-timestamp` and, with a secret, `webhook-signature`, and `User-Agent: wharf/<v>`.
//! HTTPS targets are verified against the system roots plus `notification.ca_bundle`, unless
//! the target says `skip_cert_verify`. Redirects are not followed (3xx is a failure); the
//! connection only goes to addresses the SSRF guard allows; no proxy from the environment.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;

use super::guard::{Blocked, Guard, GuardedResolver};
use super::policy::Target;
use super::sign;
use crate::events::format::Payload;

/// How much of a response body is kept with the attempt.
pub const EXCERPT_BYTES: usize = 512;

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    CaBundle(#[from] crate::pem::PemError),
    #[error("webhook client: {0}")]
    Tls(#[source] rustls::Error),
    #[error("webhook client: {0}")]
    Build(#[source] reqwest::Error),
}

/// Why an attempt failed: kept with the attempt in the store.
pub use crate::store::outbox::FailureKind;

/// The outcome of one attempt.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    pub status: Option<u16>,
    pub duration: Duration,
    /// `None` on success.
    pub error_kind: Option<FailureKind>,
    pub error: Option<String>,
    pub excerpt: Option<String>,
    pub retry_after: Option<String>,
}

impl Sent {
    pub fn ok(&self) -> bool {
        self.error_kind.is_none()
    }

    /// An attempt whose body could not be made (nothing was sent).
    pub fn unrendered(error: &crate::events::format::RenderError) -> Sent {
        Sent {
            error_kind: Some(FailureKind::TemplateOutputInvalid),
            error: Some(error.to_string()),
            ..Sent::default()
        }
    }

    /// May a later attempt succeed?
    pub fn retryable(&self) -> bool {
        self.error_kind.is_none_or(FailureKind::retryable)
    }
}

/// Sends webhook requests.
pub struct Sender {
    verify: reqwest::Client,
    insecure: reqwest::Client,
    guard: Arc<Guard>,
    timeout: Duration,
    /// Target addresses parsed (see [`Urls`]).
    urls: Urls,
}

/// Target addresses already parsed, so that an attempt clones a URL instead of parsing its
/// address again (the `url` crate's parse, IDNA pass included, was ~5,500 instructions of
/// each delivery). An address that does not parse is not kept (every attempt reports it).
/// Bounded: emptied when it holds [`Urls::MAX`] addresses.
#[derive(Default)]
struct Urls(std::sync::Mutex<std::collections::HashMap<String, reqwest::Url>>);

impl Urls {
    const MAX: usize = 1024;

    fn parse(&self, address: &str) -> Result<reqwest::Url, super::guard::TargetError> {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(u) = kept.get(address) {
            return Ok(u.clone());
        }
        let u = super::guard::target_url(address)?;
        if kept.len() >= Self::MAX {
            kept.clear();
        }
        kept.insert(address.to_string(), u.clone());
        Ok(u)
    }
}

/// Accepts any server certificate (for targets with `skip_cert_verify`).
#[derive(Debug)]
pub(crate) struct NoVerify(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn roots(ca_bundle: Option<&std::path::Path>) -> Result<rustls::RootCertStore, ClientError> {
    let mut store = crate::pem::system_roots();
    if let Some(path) = ca_bundle {
        crate::pem::add_roots(&mut store, "notification.ca_bundle", path)?;
    }
    Ok(store)
}

impl Sender {
    pub fn new(
        guard: Arc<Guard>,
        timeout: Duration,
        ca_bundle: Option<&std::path::Path>,
    ) -> Result<Sender, ClientError> {
        let provider = crate::pem::provider();
        let tls = |verify: bool| -> Result<rustls::ClientConfig, ClientError> {
            let b = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(ClientError::Tls)?;
            let mut cfg = if verify {
                b.with_root_certificates(roots(ca_bundle)?)
                    .with_no_client_auth()
            } else {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
                    .with_no_client_auth()
            };
            cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Ok(cfg)
        };
        let build = |cfg: rustls::ClientConfig| {
            reqwest::Client::builder()
                .tls_backend_preconfigured(cfg)
                .dns_resolver(Arc::new(GuardedResolver::new(guard.clone())))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(timeout)
                .connect_timeout(timeout)
                .pool_max_idle_per_host(64)
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(ClientError::Build)
        };
        Ok(Sender {
            verify: build(tls(true)?)?,
            insecure: build(tls(false)?)?,
            guard,
            timeout,
            urls: Urls::default(),
        })
    }

    /// The guard this client enforces.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// POST `payload` to `target` as message `id`.
    pub async fn send(&self, target: &Target, payload: &Payload, id: &str) -> Sent {
        let started = Instant::now();
        let done = |mut s: Sent| {
            s.duration = started.elapsed();
            s
        };
        // parsed once: the guard's literal check and the request use the same URL
        let url = self.urls.parse(&target.address);
        if let Ok(u) = &url
            && let Err(b) = self.check_literal(u)
        {
            return done(Sent {
                error_kind: Some(FailureKind::RefusedTarget),
                error: Some(b.to_string()),
                ..Sent::default()
            });
        }
        let ts = chrono::Utc::now().timestamp();
        let client = if target.skip_cert_verify {
            &self.insecure
        } else {
            &self.verify
        };
        let req = match url {
            Ok(u) => client.post(u),
            // reqwest reports the address it cannot use as the attempt's error
            Err(_) => client.post(&target.address),
        };
        let mut req = req
            .header(http::header::CONTENT_TYPE, payload.content_type.as_ref())
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .body(payload.body.clone());
        if let Some(auth) = target.auth_header.as_deref().filter(|a| !a.is_empty()) {
            req = req.header(http::header::AUTHORIZATION, auth);
        }
        if let Some(secret) = target.secret.as_deref().filter(|s| !s.is_empty()) {
            req = req.header(
                "webhook-signature",
                sign::sign(secret, id, ts, &payload.body),
            );
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // without the URL: its path may be a secret (Slack)
            Err(e) => return done(transport_failure(&e.without_url(), self.timeout)),
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let excerpt = read_excerpt(resp).await;
        let error_kind = if status.is_success() {
            None
        } else if status == http::StatusCode::GONE {
            Some(FailureKind::Gone)
        } else {
            Some(FailureKind::Http)
        };
        done(Sent {
            status: Some(status.as_u16()),
            error_kind,
            error: error_kind.map(|_| format!("HTTP {status}")),
            excerpt,
            retry_after,
            ..Sent::default()
        })
    }

    /// An IP-literal host never goes through the resolver: check it here.
    fn check_literal(&self, u: &reqwest::Url) -> Result<(), Blocked> {
        let ip = match u.host() {
            Some(url::Host::Ipv4(v4)) => std::net::IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => std::net::IpAddr::V6(v6),
            _ => return Ok(()),
        };
        self.guard.check(ip)
    }
}

async fn read_excerpt(mut resp: reqwest::Response) -> Option<String> {
    let mut buf = Vec::new();
    while buf.len() < EXCERPT_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    if buf.is_empty() {
        return None;
    }
    buf.truncate(EXCERPT_BYTES);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn transport_failure(e: &reqwest::Error, timeout: Duration) -> Sent {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut blocked = None;
    let mut tls = false;
    while let Some(s) = src {
        if let Some(b) = s.downcast_ref::<Blocked>() {
            blocked = Some(b.to_string());
        }
        if s.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        src = s.source();
    }
    let (kind, error) = if let Some(b) = blocked {
        (FailureKind::RefusedTarget, b)
    } else if e.is_timeout() {
        (
            FailureKind::Timeout,
            format!("no answer within {}s", timeout.as_secs()),
        )
    } else if tls {
        (FailureKind::Tls, crate::error_chain(e))
    } else if e.is_connect() {
        (FailureKind::Connect, crate::error_chain(e))
    } else {
        (FailureKind::Transport, crate::error_chain(e))
    };
    Sent {
        error_kind: Some(kind),
        error: Some(error),
        ..Sent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Payload {
        Payload {
            content_type: std::borrow::Cow::Borrowed("application/json"),
            body: b"{}".to_vec(),
        }
    }

    // the address is parsed once per attempt: a literal the guard refuses is still refused
    // before any connection, and an address that does not parse is a failed attempt
    #[tokio::test]
    async fn refused_literals_and_unparsable_addresses_fail_the_attempt() {
        let sender = Sender::new(Arc::new(Guard::default()), Duration::from_secs(1), None).unwrap();
        let sent = sender
            .send(
                &Target::http("http://169.254.169.254/latest"),
                &payload(),
                "id-1",
            )
            .await;
        assert_eq!(
            sent.error_kind,
            Some(FailureKind::RefusedTarget),
            "{sent:?}"
        );
        let sent = sender
            .send(&Target::http("http://exa mple/"), &payload(), "id-2")
            .await;
        assert!(
            sent.error_kind.is_some() && sent.status.is_none(),
            "{sent:?}"
        );
    }

    /// A parsed address is kept and handed out again; a bad one is not kept; the set is bounded.
    #[test]
    fn target_urls_are_parsed_once_and_bounded() {
        let urls = Urls::default();
        let a = urls.parse("http://127.0.0.1:9/hook?x=1").unwrap();
        assert_eq!(a.as_str(), "http://127.0.0.1:9/hook?x=1");
        assert_eq!(urls.parse("http://127.0.0.1:9/hook?x=1").unwrap(), a);
        assert!(urls.parse("not a url").is_err());
        assert_eq!(urls.0.lock().unwrap().len(), 1);
        for i in 0..Urls::MAX + 5 {
            urls.parse(&format!("http://h{i}.example/")).unwrap();
        }
        assert!(urls.0.lock().unwrap().len() <= Urls::MAX);
    }
}
