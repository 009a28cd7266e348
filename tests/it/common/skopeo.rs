//! skopeo with a private blob-info cache.
//!
//! skopeo remembers where blobs were seen (`blob-info-cache-v1.boltdb`) and then skips uploads
//! or tries cross-repo mounts on later runs, which would make tests depend on each other. As
//! root the cache is `/var/lib/containers/cache`, so each run goes through
//! `unshare --mount` with an empty temp dir bind-mounted over that path; otherwise
//! `XDG_DATA_HOME`/`HOME` point into a temp dir. Either way each [`Skopeo`] has its own cache
//! (shared by its runs, like a real user's).

use std::path::Path;

use tempfile::TempDir;

use super::cmd::{self, CmdOutput};
use super::{COMMAND_TIMEOUT, tools};

/// A skopeo runner with its own cache and home. Global flags: `--insecure-policy`.
pub struct Skopeo {
    dir: TempDir,
}

impl Default for Skopeo {
    fn default() -> Self {
        Self::new()
    }
}

impl Skopeo {
    /// A runner with an empty cache (panics with an install hint when skopeo is missing).
    pub fn new() -> Skopeo {
        tools::skopeo();
        let dir = tempfile::Builder::new()
            .prefix("wharf-it-skopeo-")
            .tempdir()
            .expect("skopeo temp dir");
        for d in ["cache", "home", "tmp"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("skopeo dirs");
        }
        Skopeo { dir }
    }

    /// The runner's temp dir (`cache/`, `home/`, `tmp/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run `skopeo --insecure-policy ARGS…`.
    pub async fn run(&self, args: &[&str]) -> CmdOutput {
        let skopeo = tools::skopeo();
        let home = self.dir.path().join("home");
        let mut c = if tools::is_root() {
            let mut c = tokio::process::Command::new(tools::unshare());
            c.arg("--mount")
                .arg("sh")
                .arg("-c")
                .arg(
                    "mkdir -p /var/lib/containers/cache && \
                     mount --bind \"$WHARF_IT_SKOPEO_CACHE\" /var/lib/containers/cache && \
                     exec \"$WHARF_IT_SKOPEO\" \"$@\"",
                )
                .arg("sh")
                .env("WHARF_IT_SKOPEO_CACHE", self.dir.path().join("cache"))
                .env("WHARF_IT_SKOPEO", &skopeo);
            c
        } else {
            tokio::process::Command::new(&skopeo)
        };
        c.env("HOME", &home)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("tmp"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            .arg("--insecure-policy")
            .args(args);
        cmd::run(c, COMMAND_TIMEOUT).await
    }

    /// Run and panic (with stderr) unless it succeeds.
    pub async fn run_ok(&self, args: &[&str]) -> CmdOutput {
        self.run(args).await.assert_success()
    }

    /// `skopeo copy [--src-tls-verify=false] [--dest-tls-verify=false] EXTRA… SRC DST`:
    /// TLS verification is turned off for each `docker://` side (plain-HTTP test servers).
    /// `extra` holds flags such as `--all`, `--dest-creds u:p`.
    pub async fn copy(&self, src: &str, dst: &str, extra: &[&str]) -> CmdOutput {
        let mut args = vec!["copy"];
        if src.starts_with("docker://") {
            args.push("--src-tls-verify=false");
        }
        if dst.starts_with("docker://") {
            args.push("--dest-tls-verify=false");
        }
        args.extend_from_slice(extra);
        args.push(src);
        args.push(dst);
        self.run(&args).await
    }

    /// [`Skopeo::copy`] that must succeed.
    pub async fn copy_ok(&self, src: &str, dst: &str, extra: &[&str]) -> CmdOutput {
        self.copy(src, dst, extra).await.assert_success()
    }

    /// `skopeo inspect --raw` of `image` (`docker://…` or `oci:…`): the manifest bytes as
    /// stored. `extra`: e.g. `["--creds", "u:p"]`.
    pub async fn inspect_raw(&self, image: &str, extra: &[&str]) -> Vec<u8> {
        let mut args = vec!["inspect", "--raw"];
        if image.starts_with("docker://") {
            args.push("--tls-verify=false");
        }
        args.extend_from_slice(extra);
        args.push(image);
        self.run_ok(&args).await.stdout.into_bytes()
    }

    /// `sha256:<hex>` of the raw manifest of `image` (the digest the registry stores it under).
    pub async fn manifest_digest(&self, image: &str, extra: &[&str]) -> String {
        super::http::sha256_digest(&self.inspect_raw(image, extra).await)
    }
}
