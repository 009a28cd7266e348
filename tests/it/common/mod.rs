//! The shared integration-test harness.
//!
//! Building blocks, one module each:
//!
//! - [`tools`]: find `docker-registry`, `skopeo`, `helm`, `htpasswd`; panic with an install hint
//!   when one is missing (tests never skip silently).
//! - [`registry`]: [`Registry`], a real `docker-registry` per test (plain or htpasswd auth).
//! - [`wharf`]: [`Wharf`] (in-process, on the test's runtime) and [`WharfProcess`] (the real
//!   binary as a child process: signals, exit codes, memory), both built by [`WharfBuilder`].
//! - [`oci`]: OCI image layouts on disk, made in Rust (single-platform images, two-platform
//!   indexes, big random blobs written streaming with their sha256).
//! - [`skopeo`]: [`Skopeo`], skopeo with an isolated blob-info cache.
//! - [`helm`]: [`Helm`], helm with isolated config/cache/data/registry-config homes, chart
//!   packaging.
//! - [`chartmuseum`]: [`ChartMuseum`], an in-process FAKE of ChartMuseum's HTTP API
//!   (`--depth=1`), since no ChartMuseum build is installable here.
//! - [`receiver`]: [`Receiver`], an in-process HTTP server that records every request and
//!   answers from a programmable queue (webhook endpoint, or a recording upstream).
//! - [`http`]: a plain-HTTP `reqwest` client, a raw TCP HTTP/1.1 client for exact bytes on the
//!   wire, streaming upload/download of files, [`RegistryClient`] for the `/v2` API.
//! - [`postgres`]: a private PostgreSQL cluster for the test run, a database per test.
//! - [`procfs`]: listening ports and memory of a process, from `/proc`.
//! - [`cmd`]: running a command with a timeout, [`CmdOutput`].
//!
//! Conventions: everything binds `127.0.0.1` on port 0; every object owns its temp dirs and
//! processes and cleans up on drop; helpers that expect success panic with the full context
//! (command line, exit status, stderr, server log) so a failing test explains itself.

#![allow(dead_code)] // Not every test module uses every helper.

pub mod api;
pub mod chartmuseum;
pub mod cmd;
pub mod helm;
pub mod http;
pub mod oci;
pub mod postgres;
pub mod procfs;
pub mod receiver;
pub mod registry;
pub mod skopeo;
pub mod tools;
pub mod wharf;

use std::sync::Once;
use std::time::Duration;

// Re-exports for test modules; not every module uses every one.
#[allow(unused_imports)]
pub use chartmuseum::ChartMuseum;
#[allow(unused_imports)]
pub use cmd::CmdOutput;
#[allow(unused_imports)]
pub use helm::{ChartKind, Helm};
#[allow(unused_imports)]
pub use http::{RawResponse, RegistryClient, client};
#[allow(unused_imports)]
pub use oci::{Blob, OciImage};
#[allow(unused_imports)]
pub use receiver::{Receiver, Recorded, Reply};
#[allow(unused_imports)]
pub use registry::Registry;
#[allow(unused_imports)]
pub use skopeo::Skopeo;
#[allow(unused_imports)]
pub use wharf::{Wharf, WharfBuilder, WharfProcess};

/// How long the harness waits for a server to come up before it gives up (and panics).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a client command (skopeo, helm) may run before it is killed and the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Send wharf's in-process logs to the test output (shown for failing tests, or with
/// `--nocapture`). Filter from `RUST_LOG`, default `warn`. Safe to call from every test.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// The text of `GET {base}/metrics`.
pub async fn metrics_text(base: &str) -> String {
    client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Poll `check` every 50 ms until it returns `Some`, or panic with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A repository name unique within this test process (`prefix-<n>`), for tests that want
/// distinct names without thinking about it.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Ports this test process has handed out to receivers and as closed ports: each only once.
/// Tests run in parallel in one process, and a wharf of one test may still be retrying
/// webhooks to a port its test is done with; were that port handed to a receiver of a later
/// test, the receiver would count the other test's requests.
pub fn claim_port(port: u16) -> bool {
    static USED: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<u16>>> =
        std::sync::OnceLock::new();
    USED.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(port)
}

/// A loopback port nothing listens on (bound, then released), never handed out before.
pub fn closed_port() -> u16 {
    // the ports passed over stay bound until one is found, so that none comes back
    let mut passed = Vec::new();
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if claim_port(port) {
            return port;
        }
        passed.push(l);
    }
}
