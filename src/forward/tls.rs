//! The TLS client of the upstreams: the system's trust store plus `upstream.ca_bundle`, the
//! client certificate of `upstream.client_cert`/`client_key`, and what a client may be told of
//! a TLS failure.

use crate::config::UpstreamConfig;

/// Why the TLS client of the upstreams could not be set up. Each message starts with the
/// config key it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or used, `upstream.client_key` not fitting `client_cert` included.
    #[error(transparent)]
    Pem(#[from] crate::pem::PemError),
    #[error("{key}: must be set together with {other}")]
    Unpaired {
        key: &'static str,
        other: &'static str,
    },
    #[error("upstream TLS set-up: {0}")]
    Build(#[source] rustls::Error),
}

/// The TLS client configuration of the upstreams: the system's trust store (the bundled Mozilla
/// roots when it is empty) plus `upstream.ca_bundle`, and the client certificate of
/// `upstream.client_cert`/`client_key` when set.
pub fn client_tls(cfg: &UpstreamConfig) -> Result<rustls::ClientConfig, TlsError> {
    build_tls(cfg, crate::pem::system_roots())
}

/// Read and check the files of `upstream.ca_bundle`, `client_cert` and `client_key` (for the
/// config's validation: the system's trust store is not read).
pub fn check_tls_files(cfg: &UpstreamConfig) -> Result<(), TlsError> {
    build_tls(cfg, rustls::RootCertStore::empty()).map(drop)
}

fn build_tls(
    cfg: &UpstreamConfig,
    mut roots: rustls::RootCertStore,
) -> Result<rustls::ClientConfig, TlsError> {
    if let Some(path) = &cfg.ca_bundle {
        crate::pem::add_roots(&mut roots, "upstream.ca_bundle", path)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Build)?
        .with_root_certificates(roots);
    match (&cfg.client_cert, &cfg.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(TlsError::Unpaired {
            key: "upstream.client_key",
            other: "upstream.client_cert",
        }),
        (None, Some(_)) => Err(TlsError::Unpaired {
            key: "upstream.client_cert",
            other: "upstream.client_key",
        }),
        (Some(cert), Some(key_path)) => {
            let chain = crate::pem::certs("upstream.client_cert", cert)?;
            let key = crate::pem::private_key("upstream.client_key", key_path)?;
            builder.with_client_auth_cert(chain, key).map_err(|source| {
                TlsError::Pem(crate::pem::PemError::Rejected {
                    key: "upstream.client_key",
                    path: key_path.clone(),
                    source,
                })
            })
        }
    }
}

/// What a client may be told about a TLS failure: the certificate problem, without names or
/// addresses.
pub(super) fn tls_problem(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "certificate signed by an unknown authority (add its CA to upstream.ca_bundle)"
                    .into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "certificate is not valid for the upstream's host name".into()
            }
            C::Expired | C::ExpiredContext { .. } => "certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate is not valid yet".into(),
            C::Revoked => "certificate has been revoked".into(),
            C::BadSignature => "certificate has a bad signature".into(),
            C::BadEncoding => "certificate is malformed".into(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "certificate is not meant for a TLS server".into()
            }
            other => format!("certificate rejected ({other:?})"),
        },
        E::AlertReceived(
            a @ (A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied),
        ) => format!(
            "the upstream refused wharf's client certificate (alert {a:?}; see upstream.client_cert)"
        ),
        E::AlertReceived(a) => format!("the upstream ended the handshake (alert {a:?})"),
        E::InvalidMessage(_) => {
            "the upstream does not speak TLS (should the URL be http://?)".into()
        }
        other => other.to_string(),
    }
}

/// The first rustls error in `e`'s chain (looking inside `io::Error`s, whose `source` skips the
/// error they wrap).
pub(super) fn find_tls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                return Some(t);
            }
            cur = Some(inner);
            continue;
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::forward::ForwardError;

    #[test]
    fn tls_errors_are_found_inside_io_errors_and_named_without_addresses() {
        #[derive(Debug, thiserror::Error)]
        #[error("connecting")]
        struct Connecting(#[source] std::io::Error);
        let name = rustls_pki_types::ServerName::try_from("registry.internal")
            .unwrap()
            .to_owned();
        let cert =
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                expected: name,
                presented: vec!["DnsName(\"other.internal\")".into()],
            });
        // tokio-rustls wraps the rustls error in an io::Error, whose source() skips it
        let e = Connecting(std::io::Error::new(std::io::ErrorKind::InvalidData, cert));
        let found = find_tls_error(&e).expect("the rustls error is found");
        let problem = tls_problem(found);
        assert_eq!(
            problem,
            "certificate is not valid for the upstream's host name"
        );
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(tls_problem(&alert).contains("client certificate"));
        let none = Connecting(std::io::Error::other("connection refused"));
        assert!(find_tls_error(&none).is_none());
        let err = ForwardError::Tls {
            upstream: "registry",
            problem,
            source: std::io::Error::other("…registry.internal…").into(),
        };
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(err.kind(), "tls");
    }
}
