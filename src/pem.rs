//! Every TLS set-up's material — the listener (`tls.cert`, `tls.key`), the upstreams
//! (`upstream.ca_bundle`, `client_cert`, `client_key`), the webhook client
//! (`notification.ca_bundle`) and PostgreSQL (`sslrootcert`): one crypto provider
//! ([`provider`]) and one reader of certificates and keys from PEM files, whose errors name the
//! configuration key and the file and keep their cause.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{key}: {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{key}: {} holds no {what} in PEM form", path.display())]
    Empty {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{key}: {}: {source}", path.display())]
    Rejected {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Every certificate of the PEM file `path` (configured as `key`); none is an error.
pub fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let read = |source| PemError::Read {
        key,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            key,
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The private key of the PEM file `path` (configured as `key`).
pub fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::Empty {
            key,
            path: path.to_path_buf(),
            what: "private key",
        },
        source => PemError::Read {
            key,
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Add every certificate of the PEM file `path` (configured as `key`) to `roots`; one that
/// rustls cannot use as a trust anchor is an error.
pub fn add_roots(
    roots: &mut rustls::RootCertStore,
    key: &'static str,
    path: &Path,
) -> Result<(), PemError> {
    for cert in certs(key, path)? {
        roots.add(cert).map_err(|source| PemError::Rejected {
            key,
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Check that the PEM file `path` (configured as `key`) holds certificates rustls can trust
/// (configuration validation: nothing is kept).
pub fn check_roots(key: &'static str, path: &Path) -> Result<(), PemError> {
    add_roots(&mut rustls::RootCertStore::empty(), key, path)
}

/// The crypto provider of every TLS client and server wharf builds: rustls's aws-lc-rs
/// provider, whose key exchange offers the post-quantum hybrid `X25519MLKEM768` first (then
/// X25519, P-256, P-384), so a peer that supports it gets a handshake that recorded traffic
/// cannot later be decrypted with a quantum computer; a peer that does not falls back to
/// X25519 in the same handshake. (rustls 0.23.48 deprecated its *ring* provider for lacking it.)
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The system's trust store (a certificate rustls cannot use is skipped), or the bundled
/// Mozilla roots when the system has none.
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

/// PEM files for the tests of every module that reads them, in a temp dir: a self-signed
/// certificate for `localhost` and its key, a key of another pair, a file that is not PEM, an
/// empty one, and a path where nothing is.
#[cfg(test)]
pub(crate) struct TestFiles {
    pub dir: tempfile::TempDir,
    /// The certificate, as PEM text.
    pub cert_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub other_key: PathBuf,
    pub junk: PathBuf,
    pub empty: PathBuf,
    pub missing: PathBuf,
}

#[cfg(test)]
impl TestFiles {
    pub fn new() -> TestFiles {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        TestFiles {
            cert_pem: cert.pem(),
            cert: write("cert.pem", &cert.pem()),
            key: write("key.pem", &key.serialize_pem()),
            other_key: write("other.pem", &other.serialize_pem()),
            junk: write("junk.pem", "not a certificate\n"),
            empty: write("empty.pem", ""),
            missing: dir.path().join("missing.pem"),
            dir,
        }
    }

    /// Another file in the same dir.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key exchange offered first is the post-quantum hybrid; classical X25519 stays for
    /// peers without it.
    #[test]
    fn the_provider_offers_post_quantum_key_exchange_first() {
        use rustls::NamedGroup;
        let groups: Vec<NamedGroup> = provider().kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups.first(),
            Some(&NamedGroup::X25519MLKEM768),
            "{groups:?}"
        );
        assert!(groups.contains(&NamedGroup::X25519), "{groups:?}");
    }

    /// Each way a PEM file can be unusable names the key and the file, and keeps the cause.
    #[test]
    fn unusable_files_name_the_key_and_the_file() {
        use std::error::Error as _;
        let f = TestFiles::new();
        let (cert_file, key_file, empty, missing) = (&f.cert, &f.key, &f.empty, &f.missing);

        assert_eq!(certs("k", cert_file).unwrap().len(), 1);
        assert!(private_key("k", key_file).is_ok());
        let mut roots = rustls::RootCertStore::empty();
        add_roots(&mut roots, "k", cert_file).unwrap();
        assert_eq!(roots.len(), 1);

        let e = certs("tls.cert", missing).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("tls.cert: {}: ", missing.display())),
            "{e}"
        );
        assert!(e.source().is_some());
        assert_eq!(
            certs("upstream.ca_bundle", empty).unwrap_err().to_string(),
            format!(
                "upstream.ca_bundle: {} holds no certificate in PEM form",
                empty.display()
            )
        );
        assert_eq!(
            private_key("tls.key", cert_file).unwrap_err().to_string(),
            format!(
                "tls.key: {} holds no private key in PEM form",
                cert_file.display()
            )
        );
        assert!(matches!(
            private_key("tls.key", missing),
            Err(PemError::Read { key: "tls.key", .. })
        ));
    }
}
