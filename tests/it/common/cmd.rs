//! Running external commands from async tests.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// What a finished command produced.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// Exit code 0?
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panic (showing the command, status, stdout and stderr) unless it succeeded.
    #[track_caller]
    pub fn assert_success(self) -> Self {
        if !self.success() {
            panic!("command failed:\n{self}");
        }
        self
    }

    /// Panic (showing everything) unless it failed.
    #[track_caller]
    pub fn assert_failure(self) -> Self {
        if self.success() {
            panic!("command succeeded but was expected to fail:\n{self}");
        }
        self
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Run `cmd` to completion (stdin closed, output captured); kill it and panic after `timeout`.
pub async fn run(mut cmd: tokio::process::Command, timeout: Duration) -> CmdOutput {
    let command = describe(cmd.as_std());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.unwrap_or_else(|e| panic!("waiting for `{command}`: {e}")),
        Err(_) => panic!("`{command}` did not finish within {timeout:?} (killed)"),
    };
    CmdOutput {
        command,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A shell-like rendering of a command line (program and arguments).
pub fn describe(cmd: &std::process::Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
