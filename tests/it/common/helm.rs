//! helm with isolated homes, and chart packaging.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::cmd::{self, CmdOutput};
use super::{COMMAND_TIMEOUT, tools};

/// The `type:` of a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    /// `type: application`, with a ConfigMap template.
    Application,
    /// `type: library`, with only a `_helpers.tpl`.
    Library,
}

impl ChartKind {
    fn as_str(self) -> &'static str {
        match self {
            ChartKind::Application => "application",
            ChartKind::Library => "library",
        }
    }
}

/// A helm runner with its own `HELM_CONFIG_HOME`, `HELM_CACHE_HOME`, `HELM_DATA_HOME`,
/// `HELM_REGISTRY_CONFIG` (and `HOME`) in a temp dir, so logins and caches never leak between
/// tests.
pub struct Helm {
    dir: TempDir,
}

impl Default for Helm {
    fn default() -> Self {
        Self::new()
    }
}

impl Helm {
    /// A runner (panics with an install hint when helm is missing).
    pub fn new() -> Helm {
        tools::helm();
        let dir = tempfile::Builder::new()
            .prefix("wharf-it-helm-")
            .tempdir()
            .expect("helm temp dir");
        for d in ["config", "cache", "data", "home", "charts", "work"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("helm dirs");
        }
        Helm { dir }
    }

    /// The runner's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run `helm ARGS…` in the isolated environment.
    pub async fn run(&self, args: &[&str]) -> CmdOutput {
        let d = self.dir.path();
        let mut c = tokio::process::Command::new(tools::helm());
        c.env("HELM_CONFIG_HOME", d.join("config"))
            .env("HELM_CACHE_HOME", d.join("cache"))
            .env("HELM_DATA_HOME", d.join("data"))
            .env("HELM_REGISTRY_CONFIG", d.join("config/registry.json"))
            .env("HELM_REPOSITORY_CONFIG", d.join("config/repositories.yaml"))
            .env("HELM_REPOSITORY_CACHE", d.join("cache/repository"))
            .env("HOME", d.join("home"))
            .env("KUBECONFIG", d.join("home/kubeconfig"))
            .current_dir(d.join("work"))
            .args(args);
        cmd::run(c, COMMAND_TIMEOUT).await
    }

    /// Run and panic (with stderr) unless it succeeds.
    pub async fn run_ok(&self, args: &[&str]) -> CmdOutput {
        self.run(args).await.assert_success()
    }

    /// Write a chart `name` `version` of `kind` by hand (Chart.yaml, values.yaml, templates)
    /// and `helm package` it; returns the path of `<name>-<version>.tgz`.
    pub async fn package(&self, name: &str, version: &str, kind: ChartKind) -> PathBuf {
        let src = self
            .dir
            .path()
            .join("src")
            .join(format!("{name}-{version}"));
        let chart_dir = src.join(name);
        let templates = chart_dir.join("templates");
        std::fs::create_dir_all(&templates).expect("chart dir");
        std::fs::write(
            chart_dir.join("Chart.yaml"),
            format!(
                "apiVersion: v2\nname: {name}\nversion: {version}\ntype: {}\n\
                 description: wharf integration test chart\nappVersion: \"1.0\"\n",
                kind.as_str()
            ),
        )
        .expect("Chart.yaml");
        std::fs::write(chart_dir.join("values.yaml"), "greeting: hello\n").expect("values");
        std::fs::write(
            templates.join("_helpers.tpl"),
            format!("{{{{- define \"{name}.name\" -}}}}{name}{{{{- end -}}}}\n"),
        )
        .expect("_helpers.tpl");
        if kind == ChartKind::Application {
            std::fs::write(
                templates.join("configmap.yaml"),
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ include \"{name}.name\" . }}}}\n\
                     data:\n  greeting: {{{{ .Values.greeting | quote }}}}\n"
                ),
            )
            .expect("configmap.yaml");
        }
        let out_dir = self.dir.path().join("charts");
        self.run_ok(&[
            "package",
            chart_dir.to_str().expect("utf-8 path"),
            "-d",
            out_dir.to_str().expect("utf-8 path"),
        ])
        .await;
        let tgz = out_dir.join(format!("{name}-{version}.tgz"));
        assert!(
            tgz.is_file(),
            "helm package did not write {}",
            tgz.display()
        );
        tgz
    }

    /// `helm push CHART oci://<host>/<project> --plain-http`.
    pub async fn push(&self, chart: &Path, host: &str, project: &str) -> CmdOutput {
        self.run(&[
            "push",
            chart.to_str().expect("utf-8 path"),
            &format!("oci://{host}/{project}"),
            "--plain-http",
        ])
        .await
    }

    /// `helm pull oci://<host>/<project>/<name> --version V --plain-http -d <fresh dir>`; must
    /// succeed; returns the pulled `.tgz`.
    pub async fn pull(&self, host: &str, project: &str, name: &str, version: &str) -> PathBuf {
        let dest = tempfile::Builder::new()
            .prefix("pull-")
            .tempdir_in(self.dir.path())
            .expect("pull dir")
            .keep();
        self.run_ok(&[
            "pull",
            &format!("oci://{host}/{project}/{name}"),
            "--version",
            version,
            "--plain-http",
            "-d",
            dest.to_str().expect("utf-8 path"),
        ])
        .await;
        let tgz = dest.join(format!("{name}-{version}.tgz"));
        assert!(tgz.is_file(), "helm pull did not write {}", tgz.display());
        tgz
    }

    /// `helm registry login HOST -u USER -p PASS --insecure` (plain HTTP); must succeed.
    pub async fn login(&self, host: &str, user: &str, pass: &str) {
        self.run_ok(&[
            "registry",
            "login",
            host,
            "-u",
            user,
            "-p",
            pass,
            "--insecure",
        ])
        .await;
    }
}
