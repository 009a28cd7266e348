//! The `wharf` command line: `--version`, `check-config` (effective config, secrets masked,
//! errors that name the key), env overrides and `WHARF_CONFIG`.

use std::process::Command;

fn wharf() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wharf"));
    // a stray WHARF_* variable of the test environment must not change the answers
    for k in crate::common::tools::wharf_env_vars() {
        c.env_remove(k);
    }
    c
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("wharf.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = "upstream: {registry: \"http://127.0.0.1:5000\"}\nadmin_password: s3cret-password\nside_api_token: side-token-0123456789\n";

#[test]
fn version_is_printed() {
    let out = wharf().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("wharf {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, GOOD);
    let out = wharf()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("WHARF_LOG__FORMAT", "json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("registry: http://127.0.0.1:5000"), "{text}");
    assert!(
        text.contains("format: json"),
        "env override applied: {text}"
    );
    assert!(text.contains("admin_password: '***'"), "{text}");
    assert!(
        !text.contains("s3cret-password") && !text.contains("side-token-0123456789"),
        "{text}"
    );
    assert!(
        text.contains("index_window: 10s"),
        "defaults are shown: {text}"
    );
}

#[test]
fn check_config_takes_the_file_from_wharf_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, GOOD);
    let out = wharf()
        .arg("check-config")
        .env("WHARF_CONFIG", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn invalid_configs_fail_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, env, key) in [
        (
            "upstream: {registry: \"http://x\"}\nadmin_password: s3cret-password\nlisten: nowhere\n",
            None,
            "listen",
        ),
        (
            "upstream: {registry: \"ftp://x\"}\nadmin_password: s3cret-password\n",
            None,
            "upstream.registry",
        ),
        (
            GOOD,
            Some(("WHARF_NOTIFICATION__WEBHOOK_JOB_MAX_RETRY", "many")),
            "notification.webhook_job_max_retry",
        ),
        (GOOD, Some(("WHARF_NOPE", "1")), "WHARF_NOPE"),
        (
            "upstream: {registry: \"http://x\"}\nadmin_password: s3cret-password\nprojects: {prj: {storage_limit: lots}}\n",
            None,
            "projects.prj.storage_limit",
        ),
        (GOOD, Some(("WHARF_LOG__BUFFER", "1GiB")), "log.buffer"),
        (
            "upstream: {registry: \"http://x\"}\nadmin_password: s3cret-password\nlog: {flush_interval: 0s}\n",
            None,
            "log.flush_interval",
        ),
        (
            GOOD,
            Some(("WHARF_SERVER__WORKER_THREADS", "0")),
            "server.worker_threads",
        ),
    ] {
        let path = write_config(&dir, text);
        let mut cmd = wharf();
        cmd.args(["check-config", "--config"]).arg(&path);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{text} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key} not named in: {err}");
    }
    let out = wharf()
        .args(["check-config", "--config", "/nonexistent/wharf.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/wharf.yaml"));
}

#[test]
fn serve_refuses_an_invalid_config_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "upstream: {registry: \"http://x\"}\nadmin_password: \"\"\n",
    );
    let out = wharf()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin_password"));
}

/// `store copy --password-file`: a file it cannot read is named as the flag, not as the
/// config's key `store.password_file` (which that command refuses).
#[test]
fn store_copy_names_its_password_file_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = write_config(&dir, &format!("{GOOD}data_dir: {}\n", data.display()));
    // not UTF-8: the read fails, as an unreadable file's does
    let pw = dir.path().join("pw");
    std::fs::write(&pw, [0xff, 0xfe, b'\n']).unwrap();
    let out = wharf()
        .args(["store", "copy", "--config"])
        .arg(&path)
        .args(["--to", "postgres://u@127.0.0.1:1/db", "--password-file"])
        .arg(&pw)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--password-file: cannot read"), "{err}");
    assert!(!err.contains("store.password_file"), "{err}");
}
