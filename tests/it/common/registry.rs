//! A real Distribution registry (`docker-registry serve`) per test.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{STARTUP_TIMEOUT, procfs, tools};

/// The realm of the htpasswd variant (`WWW-Authenticate: Basic realm="wharf-test"`).
pub const REALM: &str = "wharf-test";

/// A running `docker-registry serve` on `127.0.0.1:<free port>` with its own storage in a
/// temp dir (`storage.delete.enabled: true`, log level warn, fixed `http.secret`).
/// Its stdout and stderr go to `registry.log` in that temp dir ([`Registry::log`]).
/// The process is killed on drop.
pub struct Registry {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    dir: TempDir,
    auth: Option<(String, String)>,
    tls: Option<RegistryTls>,
}

/// HTTPS for a registry started with [`Registry::start_tls`] (distribution's `http.tls`).
#[derive(Clone)]
pub struct RegistryTls {
    /// PEM certificate chain of the registry, leaf first.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// CA certificates of the client certificates the registry then requires (mutual TLS,
    /// `http.tls.clientcas`); `None`: no client certificate asked for.
    pub client_cas: Option<PathBuf>,
    /// A client that trusts `cert` (and presents a client certificate when `client_cas` is
    /// set), for the readiness probe.
    pub probe: reqwest::Client,
}

impl Registry {
    /// A registry without authentication.
    pub async fn start() -> Registry {
        Self::spawn(None, None).await
    }

    /// A registry without authentication serving HTTPS ([`Registry::url`] is `https://…`).
    pub async fn start_tls(tls: RegistryTls) -> Registry {
        Self::spawn(None, Some(tls)).await
    }

    /// A registry requiring HTTP basic auth for `user`/`pass` (bcrypt htpasswd file, realm
    /// [`REALM`]).
    pub async fn start_with_auth(user: &str, pass: &str) -> Registry {
        Self::spawn(Some((user.to_string(), pass.to_string())), None).await
    }

    async fn spawn(auth: Option<(String, String)>, tls: Option<RegistryTls>) -> Registry {
        let bin = tools::docker_registry();
        let dir = tempfile::Builder::new()
            .prefix("wharf-it-registry-")
            .tempdir()
            .expect("registry temp dir");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("registry storage dir");
        let mut config = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            &format!("    rootdirectory: {}", storage.display()),
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            "  addr: 127.0.0.1:0",
            "  secret: wharf-integration-test-secret",
            "",
        ]
        .join("\n");
        if let Some(tls) = &tls {
            let mut block = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.cert.display(),
                tls.key.display()
            );
            if let Some(cas) = &tls.client_cas {
                block.push_str(&format!("    clientcas:\n      - {}\n", cas.display()));
            }
            config = config.replace(
                "  secret: wharf-integration-test-secret\n",
                &format!("  secret: wharf-integration-test-secret\n{block}"),
            );
        }
        if let Some((user, pass)) = &auth {
            let out = Command::new(tools::htpasswd())
                .args(["-Bbn", user, pass])
                .output()
                .expect("running htpasswd");
            assert!(
                out.status.success(),
                "htpasswd -Bbn failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, &out.stdout).expect("writing htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: {REALM}\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("writing registry config");
        let log_path = dir.path().join("registry.log");
        let log = File::create(&log_path).expect("registry log file");
        let child = Command::new(&bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let pid = child.id();
        let mut reg = Registry {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            auth,
            tls,
        };
        reg.addr = reg.wait_ready().await;
        reg
    }

    /// Find the port in /proc, then wait until `GET /v2/` answers (200, or 401 with auth).
    async fn wait_ready(&mut self) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        let port = loop {
            self.assert_alive("while starting");
            if let Ok(ports) = procfs::listening_ports(self.pid)
                && let Some(p) = ports.first()
            {
                break *p;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "docker-registry (pid {}) did not listen within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.pid,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (client, scheme) = match &self.tls {
            Some(tls) => (tls.probe.clone(), "https"),
            None => (super::http::client(), "http"),
        };
        loop {
            self.assert_alive("while starting");
            let probe = client
                .get(format!("{scheme}://{addr}/v2/"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(resp) = probe {
                let s = resp.status().as_u16();
                if s == 200 || (s == 401 && self.auth.is_some()) {
                    return addr;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "docker-registry on {addr} did not answer GET /v2/ within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn assert_alive(&mut self, when: &str) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "docker-registry exited {when} ({status}); log:\n{}",
                self.log()
            );
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>` as a string (for `docker://HOST/...`).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `(user, password)` of the htpasswd variant.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// `user:password` (skopeo's `--creds` format), when auth is on.
    pub fn creds_arg(&self) -> Option<String> {
        self.auth.as_ref().map(|(u, p)| format!("{u}:{p}"))
    }

    /// The storage root directory.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's temp dir (config, htpasswd, log, storage).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the registry wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Kill the registry (SIGKILL) and reap it; its port is closed afterwards. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
