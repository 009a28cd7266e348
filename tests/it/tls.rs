//! TLS and certificates: wharf serving HTTPS (`tls.cert` / `tls.key`, HTTP/2 by ALPN, the
//! registry's `Location` pointing back at `https://`), HTTPS webhook targets (verified against
//! the system roots plus `notification.ca_bundle`, or not with `skip_cert_verify`), and Bearer
//! tokens verified with `events.token_cert_bundle`; the post-quantum hybrid key exchange on
//! both sides.
//!
//! Certificates are made per test with rcgen (self-signed, for 127.0.0.1 and localhost).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::oci;
use crate::common::wharf::ADMIN_PASSWORD;
use crate::common::{Registry, Skopeo, Wharf, WharfBuilder, client, wait_until};

/// A self-signed certificate and its key, written as PEM files in a temp dir.
struct Cert {
    dir: tempfile::TempDir,
    cert_pem: String,
    /// The key as PKCS#8 (to sign tokens with it).
    pkcs8: Vec<u8>,
}

impl Cert {
    fn new() -> Cert {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Cert {
            cert_pem: cert.pem(),
            dir,
            pkcs8,
        }
    }
    fn cert_path(&self) -> String {
        self.dir.path().join("cert.pem").display().to_string()
    }
    fn key_path(&self) -> String {
        self.dir.path().join("key.pem").display().to_string()
    }

    /// A client that trusts this certificate only, offering HTTP/2 and HTTP/1.1.
    fn client(&self) -> reqwest::Client {
        self.client_with(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
    }

    /// The same, with the key exchanges and ciphers of `provider`.
    fn client_with(&self, provider: Arc<rustls::crypto::CryptoProvider>) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// An ES256 JWT with these claims, signed with this certificate's key.
    fn sign_jwt(&self, claims: &Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let head = b64(br#"{"alg":"ES256","typ":"JWT"}"#);
        let body = b64(claims.to_string().as_bytes());
        let signed = format!("{head}.{body}");
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.pkcs8).unwrap();
        let sig = key.sign(&rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64(sig.as_ref()))
    }
}

use rustls_pki_types::pem::PemObject as _;

/// A wharf in front of `registry` whose listener serves `cert`.
fn tls_wharf(registry: &Registry, cert: &Cert) -> WharfBuilder {
    Wharf::builder(&registry.url()).yaml(&format!(
        "tls: {{cert: \"{}\", key: \"{}\"}}",
        cert.cert_path(),
        cert.key_path()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_serves_the_registry_with_http2_and_https_locations() {
    let registry = Registry::start().await;
    let cert = Cert::new();
    let wharf = tls_wharf(&registry, &cert).start().await;
    let base = format!("https://{}", wharf.host());
    let c = cert.client();
    let r = c.get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN h2");
    let r = c
        .post(format!("{base}/v2/prj/tls/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with(&format!("{base}/v2/prj/tls/blobs/uploads/")),
        "{loc}"
    );

    // a real client over TLS (skopeo does not verify here), and its push event
    let dir = tempfile::tempdir().unwrap();
    let image = oci::build_image(&dir.path().join("img"), "v1", &[4096]);
    Skopeo::new()
        .copy_ok(
            &image.oci_ref(),
            &format!("docker://{}/prj/tls:v1", wharf.host()),
            &["--dest-tls-verify=false"],
        )
        .await;
    let events: Value = c
        .get(format!("{base}/api/v1/events?type=PUSH_ARTIFACT"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    // plain HTTP on the TLS port is refused, not served
    let plain = client()
        .get(format!("http://{}/v2/", wharf.host()))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

/// rustls's aws-lc-rs provider with one key exchange only, the post-quantum hybrid
/// `X25519MLKEM768`: a handshake with a peer that lacks it fails.
fn post_quantum_only() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];
    Arc::new(provider)
}

/// An HTTPS receiver with `cert`, counting requests.
async fn tls_receiver(cert: &Cert) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    tls_receiver_with(
        cert,
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .await
}

/// The same, with the key exchanges and ciphers of `provider`.
async fn tls_receiver_with(
    cert: &Cert,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert.cert_path())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(cert.key_path()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

async fn test_endpoint(wharf: &Wharf, target: Value) -> (u16, String) {
    let r = client()
        .post(format!(
            "{}/api/v2.0/projects/prj/webhook/policies/test",
            wharf.url()
        ))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .json(&json!({"targets": [target]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_are_verified_unless_told_otherwise() {
    let registry = Registry::start().await;
    let cert = Cert::new();
    let (addr, hits) = tls_receiver(&cert).await;
    let url = format!("https://{addr}/hook");
    let allow = "notification: {allowed_target_networks: [\"127.0.0.0/8\"], webhook_job_http_client_timeout: 2}";

    let wharf = Wharf::builder(&registry.url()).yaml(allow).start().await;
    let (status, text) = test_endpoint(
        &wharf,
        json!({"type": "http", "address": url, "skip_cert_verify": false}),
    )
    .await;
    assert_eq!(
        status, 400,
        "an unknown self-signed certificate must fail: {text}"
    );
    assert!(
        text.to_lowercase().contains("tls") || text.contains("certificate"),
        "{text}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    let (status, text) = test_endpoint(
        &wharf,
        json!({"type": "http", "address": url, "skip_cert_verify": true}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // the same certificate in notification.ca_bundle: verified and accepted
    let trusting = WharfBuilder::new(&registry.url())
        .yaml(allow)
        .yaml(&format!(
            "notification: {{ca_bundle: \"{}\"}}",
            cert.cert_path()
        ))
        .start()
        .await;
    let (status, text) = test_endpoint(
        &trusting,
        json!({"type": "http", "address": url, "skip_cert_verify": false}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

/// wharf's listener and its webhook client each complete a handshake with a peer whose only
/// key exchange is the post-quantum hybrid `X25519MLKEM768` (rustls's *ring* provider, used
/// before, had none: both handshakes failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_can_use_post_quantum_key_exchange() {
    let registry = Registry::start().await;
    let cert = Cert::new();
    let wharf = tls_wharf(&registry, &cert)
        .yaml("notification: {allowed_target_networks: [\"127.0.0.0/8\"], webhook_job_http_client_timeout: 2}")
        .yaml(&format!(
            "notification: {{ca_bundle: \"{}\"}}",
            cert.cert_path()
        ))
        .start()
        .await;
    let base = format!("https://{}", wharf.host());
    let c = cert.client_with(post_quantum_only());
    let r = c.get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the listener");

    let (addr, hits) = tls_receiver_with(&cert, post_quantum_only()).await;
    let r = c
        .post(format!(
            "{base}/api/v2.0/projects/prj/webhook/policies/test"
        ))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .json(&json!({"targets": [{"type": "http", "address": format!("https://{addr}/hook")}]}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "the webhook client: {text}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_trusted_only_when_their_signature_verifies() {
    let registry = Registry::start().await;
    let cert = Cert::new();
    let other = Cert::new();
    let wharf = Wharf::builder(&registry.url())
        .yaml(&format!(
            "events: {{token_cert_bundle: \"{}\"}}",
            cert.cert_path()
        ))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let image = oci::build_image(&dir.path().join("img"), "v1", &[1024]);
    Skopeo::new()
        .copy_ok(
            &image.oci_ref(),
            &format!("docker://{}/prj/jwt:v1", wharf.host()),
            &[],
        )
        .await;
    let exp = chrono::Utc::now().timestamp() + 600;
    let tokens = [
        (cert.sign_jwt(&json!({"sub": "dave", "exp": exp})), "dave"),
        (
            other.sign_jwt(&json!({"sub": "mallory", "exp": exp})),
            "anonymous",
        ),
        (
            cert.sign_jwt(&json!({"sub": "late", "exp": 1_000_000})),
            "anonymous",
        ),
    ];
    for (token, _) in &tokens {
        let r = client()
            .get(format!("{}/v2/prj/jwt/manifests/v1", wharf.url()))
            .header("accept", oci::MANIFEST_V1)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let pulls = wait_until("three pull events", Duration::from_secs(10), || async {
        let v: Value = client()
            .get(format!("{}/api/v1/events?type=PULL_ARTIFACT", wharf.url()))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v.as_array()?.len() == 3).then_some(v)
    })
    .await;
    let mut operators: Vec<&str> = pulls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["operator"].as_str().unwrap())
        .collect();
    operators.sort();
    assert_eq!(operators, vec!["anonymous", "anonymous", "dave"]);
}
