//! Upstreams behind a private CA: a real `docker-registry` serving HTTPS with a certificate from
//! a CA made in the test (rcgen), reached through wharf with `upstream.ca_bundle` (skopeo push
//! and pull), without it (a 502 OCI error naming the certificate problem, quickly), with mutual
//! TLS (`upstream.client_cert` / `client_key`), and the ChartMuseum upstream trusting the same
//! bundle. Also: a TLS handshake that never completes is cut at `upstream.connect_timeout`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

use crate::common::oci;
use crate::common::registry::RegistryTls;
use crate::common::{Registry, Skopeo, Wharf, client};

/// A private CA with a server certificate (127.0.0.1, localhost) and a client certificate it
/// signed, as PEM files in a temp dir; and a certificate from another CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::Builder::new()
            .prefix("wharf-it-pki-")
            .tempdir()
            .unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = |cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = p.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(p, key))
        };
        let (ca_pem, issuer) = ca("wharf test private CA");
        write("ca.pem", ca_pem);
        let leaf = |names: Vec<String>, cn: &str, purpose: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![purpose];
            let cert = p.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (cert, key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "registry",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write("server.pem", cert);
        write("server.key", key);
        let (cert, key) = leaf(vec![], "wharf", ExtendedKeyUsagePurpose::ClientAuth);
        write("client.pem", cert);
        write("client.key", key);
        let (other_pem, _) = ca("some other CA");
        write("other-ca.pem", other_pem);
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path` as a double-quoted YAML scalar.
    fn yaml(&self, name: &str) -> String {
        format!("\"{}\"", self.path(name).display())
    }

    /// A client trusting only the private CA, presenting the client certificate.
    fn probe_client(&self) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain = CertificateDer::pem_file_iter(self.path("client.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(self.path("client.key")).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .build()
            .unwrap()
    }

    /// The registry's TLS settings; `mutual`: it requires a client certificate of this CA.
    fn registry_tls(&self, mutual: bool) -> RegistryTls {
        RegistryTls {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_cas: mutual.then(|| self.path("ca.pem")),
            probe: self.probe_client(),
        }
    }
}

/// `GET path` on wharf: status and JSON body.
async fn get_json(wharf: &Wharf, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}{path}", wharf.url()))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

/// The 502 OCI error of a failed upstream: `UNAVAILABLE` with this `reason`; its message.
#[track_caller]
fn assert_upstream_error(status: u16, body: &Value, reason: &str) -> String {
    assert_eq!(status, 502, "{body}");
    let e = &body["errors"][0];
    assert_eq!(e["code"], "UNAVAILABLE", "{body}");
    assert_eq!(e["detail"]["reason"], reason, "{body}");
    assert_eq!(e["detail"]["upstream"], "registry", "{body}");
    e["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_and_pull_through_a_private_ca_upstream_with_ca_bundle() {
    let pki = Pki::new();
    let registry = Registry::start_tls(pki.registry_tls(false)).await;
    assert!(registry.url().starts_with("https://"));
    let wharf = Wharf::builder(&registry.url())
        .yaml(&format!(
            "upstream: {{ca_bundle: {}, chartmuseum: \"{}\"}}",
            pki.yaml("ca.pem"),
            registry.url()
        ))
        .start()
        .await;
    let work = tempfile::tempdir().unwrap();
    let image = oci::build_image(&work.path().join("src"), "v1", &[96 * 1024, 1024]);
    let skopeo = Skopeo::new();
    let remote = format!("docker://{}/prj/private-ca:v1", wharf.host());
    skopeo.copy_ok(&image.oci_ref(), &remote, &[]).await;
    let out = work.path().join("out");
    skopeo
        .copy_ok(&remote, &format!("oci:{}:v1", out.display()), &[])
        .await;
    assert_eq!(oci::layout_digest(&out, "v1"), Some(image.digest.clone()));
    // both upstreams (the ChartMuseum URL is the same TLS server: any status counts) trusted
    let (status, ready) = get_json(&wharf, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready["upstreams"]["chartmuseum"]["reachable"], true,
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ca_upstream_without_ca_bundle_is_a_502_naming_the_certificate_problem() {
    let pki = Pki::new();
    let registry = Registry::start_tls(pki.registry_tls(false)).await;
    for extra in [
        String::new(),
        // a bundle with another CA does not help
        format!("upstream: {{ca_bundle: {}}}", pki.yaml("other-ca.pem")),
    ] {
        let wharf = Wharf::builder(&registry.url())
            .yaml(&extra)
            .yaml(&format!(
                "upstream: {{chartmuseum: \"{}\"}}",
                registry.url()
            ))
            .start()
            .await;
        let started = Instant::now();
        let (status, body) = get_json(&wharf, "/v2/").await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered after {:?}",
            started.elapsed()
        );
        let message = assert_upstream_error(status, &body, "tls");
        assert!(
            message.starts_with(
                "registry upstream TLS failed: certificate signed by an unknown authority"
            ),
            "{message}"
        );
        assert!(message.contains("upstream.ca_bundle"), "{message}");
        assert!(
            !message.contains("127.0.0.1"),
            "no addresses in a client-facing message: {message}"
        );
        let (status, ready) = get_json(&wharf, "/readyz").await;
        assert_eq!(status, 503, "{ready}");
        assert_eq!(ready["upstreams"]["registry"]["reason"], "tls", "{ready}");
        assert_eq!(
            ready["upstreams"]["chartmuseum"]["reason"], "tls",
            "{ready}"
        );
        // a real client fails too, and is told why
        let work = tempfile::tempdir().unwrap();
        let image = oci::build_image(&work.path().join("src"), "v1", &[1024]);
        let out = Skopeo::new()
            .copy(
                &image.oci_ref(),
                &format!("docker://{}/prj/untrusted:v1", wharf.host()),
                &["--retry-times", "0"],
            )
            .await
            .assert_failure();
        assert!(
            out.stderr.contains("unknown authority") || out.stderr.contains("502"),
            "{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_upstream_gets_the_client_certificate() {
    let pki = Pki::new();
    let registry = Registry::start_tls(pki.registry_tls(true)).await;
    let ca_only = Wharf::builder(&registry.url())
        .yaml(&format!("upstream: {{ca_bundle: {}}}", pki.yaml("ca.pem")))
        .start()
        .await;
    let (status, body) = get_json(&ca_only, "/v2/").await;
    let message = assert_upstream_error(status, &body, "tls");
    assert!(
        message.contains("refused wharf's client certificate") && message.contains("client_cert"),
        "{message}"
    );

    let wharf = Wharf::builder(&registry.url())
        .yaml(&format!(
            "upstream: {{ca_bundle: {}, client_cert: {}, client_key: {}}}",
            pki.yaml("ca.pem"),
            pki.yaml("client.pem"),
            pki.yaml("client.key")
        ))
        .start()
        .await;
    let work = tempfile::tempdir().unwrap();
    let image = oci::build_image(&work.path().join("src"), "v1", &[8 * 1024]);
    let skopeo = Skopeo::new();
    let remote = format!("docker://{}/prj/mtls:v1", wharf.host());
    skopeo.copy_ok(&image.oci_ref(), &remote, &[]).await;
    assert_eq!(skopeo.manifest_digest(&remote, &[]).await, image.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_completes_is_cut_at_connect_timeout() {
    // accepts connections and never says a word
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let wharf = Wharf::builder(&format!("https://{addr}"))
        .yaml("upstream: {connect_timeout: 1s}")
        .start()
        .await;
    let started = Instant::now();
    let (status, body) = get_json(&wharf, "/v2/").await;
    let took = started.elapsed();
    assert_upstream_error(status, &body, "unreachable");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    held.abort();

    // an https:// URL in front of a plain-HTTP registry: named as such
    let plain = Registry::start().await;
    let wrong = Wharf::builder(&plain.url().replace("http://", "https://"))
        .start()
        .await;
    let (status, body) = get_json(&wrong, "/v2/").await;
    let message = assert_upstream_error(status, &body, "tls");
    assert!(message.contains("does not speak TLS"), "{message}");
}
