//! wharf under test: in-process ([`Wharf`]) or as the real binary ([`WharfProcess`]).
//!
//! Both are made by a [`WharfBuilder`]: the upstream registry URL plus any number of YAML
//! snippets deep-merged over the base config, so later features only add keys:
//!
//! ```ignore
//! let wharf = Wharf::builder(&registry.url())
//!     .yaml("upstream:\n  response_timeout: 1s\n")
//!     .start()
//!     .await;
//! ```
//!
//! The base config: `listen: 127.0.0.1:0`, `upstream.registry: <url>`, a temp `data_dir`,
//! `admin_password: ` [`ADMIN_PASSWORD`], `users.failed_login_burst: 100000` (tests send wrong
//! credentials on purpose), `shutdown_grace: 10s`, log level `info` for the child
//! process (`warn` otherwise). The in-process variant also sets `external_url` to its real
//! address (it binds first); the child process variant leaves it unset unless a snippet sets it.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_yaml_ng::Value;
use tempfile::TempDir;

use super::{STARTUP_TIMEOUT, procfs};

/// The admin password in every test config.
pub const ADMIN_PASSWORD: &str = "Harbor12345-wharf";

/// Configures and starts a wharf. See the module docs.
#[derive(Debug, Clone)]
pub struct WharfBuilder {
    upstream: String,
    snippets: Vec<String>,
}

impl WharfBuilder {
    /// A wharf in front of the registry at `upstream_url` (`http://127.0.0.1:PORT`).
    pub fn new(upstream_url: &str) -> Self {
        Self {
            upstream: upstream_url.to_string(),
            snippets: Vec::new(),
        }
    }

    /// Deep-merge a YAML snippet over the config (mappings merge key by key; anything else
    /// replaces). May be called repeatedly; later snippets win.
    pub fn yaml(mut self, snippet: &str) -> Self {
        self.snippets.push(snippet.to_string());
        self
    }

    /// The final YAML text: the base config for `data_dir` with the snippets merged over it.
    pub fn render(&self, data_dir: &Path) -> String {
        let base = serde_json::json!({
            "listen": "127.0.0.1:0",
            "upstream": {"registry": self.upstream},
            "data_dir": data_dir,
            "admin_password": ADMIN_PASSWORD,
            // tests send many wrong credentials from 127.0.0.1 on purpose; the failed-login
            // throttle has tests of its own that set a small burst
            "users": {"failed_login_burst": 100_000},
            "shutdown_grace": "10s",
            "log": {"level": "warn"},
        });
        let mut value: Value = serde_yaml_ng::to_value(base).expect("base config");
        for s in &self.snippets {
            let extra: Value = serde_yaml_ng::from_str(s)
                .unwrap_or_else(|e| panic!("test YAML snippet is not YAML ({e}):\n{s}"));
            merge_yaml(&mut value, extra);
        }
        serde_yaml_ng::to_string(&value).expect("config to YAML")
    }

    /// Start wharf in-process on the current tokio runtime (`wharf::Running::start`).
    /// Panics with the config when it does not start.
    pub async fn start(self) -> Wharf {
        super::init_tracing();
        let data_dir = temp_dir("wharf-it-data-");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        // The caller's snippets may still override external_url.
        let mut b = self.clone();
        b.snippets
            .insert(0, format!("external_url: \"http://{addr}\"\n"));
        let yaml = b.render(data_dir.path());
        let config = wharf::config::Config::from_yaml_with_env(
            &yaml,
            Path::new("test.yaml"),
            std::iter::empty(),
        )
        .unwrap_or_else(|e| panic!("test config rejected: {e}\n{yaml}"));
        let running = wharf::Running::start(config, listener)
            .await
            .unwrap_or_else(|e| panic!("wharf did not start: {e}\n{yaml}"));
        Wharf {
            running: Some(running),
            addr,
            data_dir,
            yaml,
        }
    }

    /// Start the real binary (`wharf serve --config FILE`) as a child process and wait until
    /// `/healthz` answers 200. Its stdout and stderr go to `wharf.log` in its temp dir.
    pub async fn spawn(self) -> WharfProcess {
        let dir = temp_dir("wharf-it-proc-");
        let data_dir = dir.path().join("data");
        // Access logs in wharf.log help debugging; the caller's snippets may still override.
        let mut b = self.clone();
        b.snippets.insert(0, "log:\n  level: info\n".to_string());
        let yaml = b.render(&data_dir);
        let config_path = dir.path().join("wharf.yaml");
        std::fs::write(&config_path, &yaml).expect("writing wharf.yaml");
        let log_path = dir.path().join("wharf.log");
        let log = File::create(&log_path).expect("wharf log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        // The test's environment must not reconfigure the child.
        for k in super::tools::wharf_env_vars() {
            cmd.env_remove(k);
        }
        let child = cmd.spawn().expect("starting the wharf binary");
        let pid = child.id();
        let mut p = WharfProcess {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            yaml,
        };
        p.addr = p.wait_ready().await;
        p
    }
}

/// Deep-merge `extra` into `base`: mappings key by key, everything else replaced.
pub fn merge_yaml(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Mapping(b), Value::Mapping(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(existing) => merge_yaml(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (b, e) => *b = e,
    }
}

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

/// wharf running in-process on the test's tokio runtime. Dropping it asks the server to stop
/// (graceful); [`Wharf::shutdown`] waits for that.
pub struct Wharf {
    running: Option<wharf::Running>,
    addr: SocketAddr,
    data_dir: TempDir,
    yaml: String,
}

impl Wharf {
    /// Start a wharf in front of `upstream_url` with the base config.
    pub async fn start(upstream_url: &str) -> Wharf {
        WharfBuilder::new(upstream_url).start().await
    }

    /// A builder, for extra config.
    pub fn builder(upstream_url: &str) -> WharfBuilder {
        WharfBuilder::new(upstream_url)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>` (for `docker://HOST/...`, `oci://HOST/...`).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The data directory (a temp dir).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The YAML the config was built from.
    pub fn config_yaml(&self) -> &str {
        &self.yaml
    }

    /// The running app (config, upstream clients, …).
    pub fn app(&self) -> &Arc<wharf::app::App> {
        &self.running.as_ref().expect("running").app
    }

    /// Graceful shutdown; returns when in-flight requests are done (or the grace expired).
    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("wharf shutdown");
        }
    }

    /// [`Wharf::shutdown`], keeping the data directory (to open its store afterwards).
    pub async fn shutdown_keeping_data(mut self) -> TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("wharf shutdown");
        }
        self.data_dir
    }
}

/// The wharf binary running as a child process. Killed (SIGKILL) on drop if still running.
pub struct WharfProcess {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    dir: TempDir,
    yaml: String,
}

impl WharfProcess {
    async fn wait_ready(&mut self) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        let client = super::http::client();
        let mut addr = None;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "wharf exited while starting ({status}); config:\n{}\nlog:\n{}",
                    self.yaml,
                    self.log()
                );
            }
            if addr.is_none()
                && let Ok(ports) = procfs::listening_ports(self.pid)
                && let Some(p) = ports.first()
            {
                addr = Some(SocketAddr::from(([127, 0, 0, 1], *p)));
            }
            if let Some(a) = addr
                && let Ok(r) = client
                    .get(format!("http://{a}/healthz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                && r.status() == 200
            {
                return a;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "wharf (pid {}) not healthy within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.pid,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id (for `/proc/<pid>/…`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The config file it runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("wharf.yaml")
    }

    /// The YAML of its config.
    pub fn config_yaml(&self) -> &str {
        &self.yaml
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Everything it logged (stdout and stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("wharf.log")).unwrap_or_default()
    }

    /// Peak and current resident memory, from `/proc/<pid>/status`.
    pub fn memory(&self) -> procfs::MemoryStatus {
        procfs::memory_status(self.pid)
            .unwrap_or_else(|e| panic!("reading /proc/{}/status: {e}", self.pid))
    }

    /// Send SIGTERM (graceful shutdown) with `kill -TERM <pid>`.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Send signal `name` (`TERM`, `INT`, `KILL`, …) with `kill -<name> <pid>`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid);
    }

    /// SIGKILL now, and reap the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the process to exit; panics (with the log) after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "wharf (pid {}) still running after {timeout:?}; log:\n{}",
                    self.pid,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Is it still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for WharfProcess {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
    }
}
