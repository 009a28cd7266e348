//! The Helm chart (`deploy/helm/wharf`) and the plain manifests (`deploy/kubernetes/`).
//!
//! For both modes and the main value combinations: `helm lint --strict`, `helm template`, every
//! rendered object validated offline against the Kubernetes 1.29 and 1.37 JSON schemas
//! (`scripts/k8s-validate.py`, the pinned `kubernetes-validate` in `.tools/venv`), the pod's
//! promises checked (probes, preStop and grace period, security context, service links, PVC,
//! PDB, ServiceMonitor, the registry on localhost only), and the wharf config the chart renders
//! passed through `wharf check-config --no-connect` with the environment the container gets
//! (files it mounts replaced by local stand-ins of the same kind). Values the chart must refuse
//! fail `helm template` with a message naming the value. The sidecar pod's two containers run
//! as processes from what the chart renders, and skopeo pushes and pulls through them.
//! `NOTES.txt` says how to reach the registry, the API and the UI. The plain manifests are what
//! `scripts/render-manifests.sh` renders from the chart today.

use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;

use crate::common::{Helm, cmd, tools};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> String {
    repo().join("deploy/helm/wharf").display().to_string()
}

/// Every object of a multi-document YAML text, as JSON values.
fn objects(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("rendered YAML is JSON-like"))
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objs, kind);
    assert_eq!(found.len(), 1, "one {kind} expected, got {}", found.len());
    found[0]
}

/// Certificates for the values that take PEM text, and stand-ins for the files the pod mounts.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        w("ca.pem", &cert.pem());
        w("cert.pem", &cert.pem());
        w("key.pem", &key.serialize_pem());
        w("password", "stand-in-db-password\n");
        w(
            "htpasswd",
            "alice:$2y$05$c4WoMPo3SXsafkva.HHa6uXQZWr7oboPiC2bT/r7q1BB8I2s0BRqC\n",
        );
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// One value combination and what it must render.
struct Case {
    name: &'static str,
    /// A values file (YAML).
    values: String,
    /// `--set-file` pairs.
    set_files: Vec<(&'static str, String)>,
    sidecar: bool,
    replicas: u64,
    /// A PVC for wharf's data_dir; one for the registry's storage.
    data_pvc: bool,
    registry_pvc: bool,
    service_monitor: bool,
    scheme: &'static str,
}

fn cases(files: &Files) -> Vec<Case> {
    let pem = |k: &'static str, f: &str| (k, files.path(f));
    vec![
        Case {
            name: "sidecar-defaults",
            values: "adminPassword: s3cret-admin\n".into(),
            set_files: vec![],
            sidecar: true,
            replicas: 1,
            data_pvc: true,
            registry_pvc: true,
            service_monitor: false,
            scheme: "HTTP",
        },
        Case {
            name: "standalone-defaults",
            values: "mode: standalone\nadminPassword: s3cret-admin\nupstream: {registry: \"http://registry.registry.svc:5000\"}\n".into(),
            set_files: vec![],
            sidecar: false,
            replicas: 1,
            data_pvc: true,
            registry_pvc: false,
            service_monitor: false,
            scheme: "HTTP",
        },
        Case {
            name: "standalone-replicas-postgres-private-ca-mtls",
            values: r#"
mode: standalone
replicaCount: 3
existingSecret: wharf-credentials
externalUrl: https://registry.example.com
upstream:
  registry: "https://registry.internal.example:5000"
  chartmuseum: "https://charts.internal.example"
store:
  url: "postgres://wharf@db.internal:5432/wharf?sslmode=require"
serviceMonitor:
  enabled: true
  labels: {release: prometheus}
config:
  log: {format: json, level: info}
  upstream: {connect_timeout: 3s, response_timeout: 5m}
  store: {pool_size: 8}
  events: {ignore_pulls: {user_agents: ["Trivy/*"]}}
  notification: {allowed_target_networks: ["10.0.0.0/8"], webhook_job_max_retry: 5}
  projects: {prj: {public: true, storage_limit: 10GiB}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector: {matchLabels: {app.kubernetes.io/name: wharf}}
"#
            .into(),
            set_files: vec![
                pem("upstream.ca_bundle", "ca.pem"),
                pem("upstream.client_cert", "cert.pem"),
                pem("upstream.client_key", "key.pem"),
            ],
            sidecar: false,
            replicas: 3,
            data_pvc: false,
            registry_pvc: false,
            service_monitor: true,
            scheme: "HTTP",
        },
        Case {
            name: "sidecar-replicas-object-storage-tls-listener",
            values: r#"
replicaCount: 2
adminPassword: s3cret-admin
sideApiToken: side-token-0123456789
store:
  url: "postgres://wharf:pw@db.internal/wharf"
tls:
  existingSecret: wharf-tls
upstream:
  existingSecret: corp-ca
  existingSecretHas: {caBundle: true, clientCert: false}
serviceMonitor:
  enabled: true
registry:
  persistence: {enabled: false}
  config:
    version: 0.1
    storage:
      s3: {region: eu-west-1, bucket: registry, rootdirectory: /registry}
      delete: {enabled: true}
    http:
      secret: shared-between-replicas
  env:
    - name: REGISTRY_STORAGE_S3_ACCESSKEY
      valueFrom: {secretKeyRef: {name: registry-s3, key: access-key}}
    - name: REGISTRY_STORAGE_S3_SECRETKEY
      valueFrom: {secretKeyRef: {name: registry-s3, key: secret-key}}
"#
            .into(),
            set_files: vec![],
            sidecar: true,
            replicas: 2,
            data_pvc: false,
            registry_pvc: false,
            service_monitor: true,
            scheme: "HTTPS",
        },
        Case {
            name: "sidecar-existing-secret-no-persistence-htpasswd",
            values: r#"
existingSecret: wharf-credentials
existingSecretKeys: {adminPassword: admin, sideApiToken: ""}
persistence: {enabled: false}
registry:
  persistence: {existingClaim: registry-data}
shutdownGraceSeconds: 10
preStopSleepSeconds: 3
terminationGracePeriodSeconds: 20
config:
  users: {htpasswd: /etc/wharf/users/htpasswd}
  projects: {prj: {admins: [alice]}}
extraVolumes:
  - name: users
    secret: {secretName: wharf-htpasswd}
extraVolumeMounts:
  - name: users
    mountPath: /etc/wharf/users
    readOnly: true
"#
            .into(),
            set_files: vec![],
            sidecar: true,
            replicas: 1,
            data_pvc: false,
            registry_pvc: false,
            service_monitor: false,
            scheme: "HTTP",
        },
    ]
}

/// Args of `helm template|lint` for a case whose values file is `values`.
fn helm_args<'a>(case: &'a Case, values: &'a str) -> Vec<String> {
    let mut a = vec!["-f".to_string(), values.to_string()];
    for (k, f) in &case.set_files {
        a.push("--set-file".into());
        a.push(format!("{k}={f}"));
    }
    a
}

/// Seconds of a duration as wharf prints it (`30s`, `1m 30s`).
fn seconds(d: &str) -> u64 {
    d.split_whitespace()
        .map(|p| {
            let (n, unit) = p.split_at(p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len()));
            let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {d:?}"));
            match unit {
                "s" | "" => n,
                "m" => n * 60,
                "h" => n * 3600,
                other => panic!("unit {other} in {d:?}"),
            }
        })
        .sum()
}

/// The pod's promises, for every case.
fn check_objects(case: &Case, objs: &[Value]) -> (String, Vec<(String, String)>, Vec<String>) {
    let name = case.name;
    let deploy = one(objs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], case.replicas, "{name}");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["enableServiceLinks"], false, "{name}");
    assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
    let containers = pod["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        if case.sidecar {
            vec!["wharf", "registry"]
        } else {
            vec!["wharf"]
        },
        "{name}"
    );
    for c in containers {
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        assert!(c["resources"]["requests"]["memory"].is_string(), "{name}");
        assert!(c["lifecycle"]["preStop"].is_object(), "{name}");
    }
    let wharf = &containers[0];
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(wharf[probe]["httpGet"]["path"], path, "{name} {probe}");
        assert_eq!(wharf[probe]["httpGet"]["port"], "http", "{name} {probe}");
        assert_eq!(
            wharf[probe]["httpGet"]["scheme"], case.scheme,
            "{name} {probe}"
        );
    }

    // wharf's config: the Secret mounted at WHARF_CONFIG's directory
    let config_secret = find(objs, "Secret")
        .into_iter()
        .find(|s| s["stringData"]["wharf.yaml"].is_string())
        .unwrap_or_else(|| panic!("{name}: no Secret with wharf.yaml"));
    let text = config_secret["stringData"]["wharf.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let config: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text).unwrap())
            .unwrap();
    let env: Vec<&Value> = wharf["env"].as_array().unwrap().iter().collect();
    let env_value = |k: &str| {
        env.iter()
            .find(|e| e["name"] == k)
            .and_then(|e| e["value"].as_str())
            .map(str::to_string)
    };
    let config_path = env_value("WHARF_CONFIG").expect("WHARF_CONFIG");
    let mounts: Vec<(String, String)> = wharf["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["mountPath"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let volumes = pod["volumes"].as_array().unwrap();
    let volume_of = |path: &str| -> &Value {
        let (vol, _) = mounts
            .iter()
            .filter(|(_, m)| path.starts_with(&format!("{m}/")))
            .max_by_key(|(_, m)| m.len())
            .unwrap_or_else(|| panic!("{name}: {path} is under no volume mount of wharf"));
        volumes
            .iter()
            .find(|v| v["name"] == vol.as_str())
            .unwrap_or_else(|| panic!("{name}: no volume {vol}"))
    };
    assert_eq!(
        volume_of(&config_path)["secret"]["secretName"],
        config_secret["metadata"]["name"],
        "{name}: WHARF_CONFIG is the config Secret"
    );
    assert_eq!(
        env_value("WHARF_LISTEN").as_deref(),
        config["listen"].as_str(),
        "{name}: the image's WHARF_LISTEN is overridden with the config's listen"
    );
    let grace = seconds(config["shutdown_grace"].as_str().unwrap());
    let pre_stop = wharf["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap() > grace + pre_stop,
        "{name}: terminationGracePeriodSeconds longer than preStop + shutdown_grace"
    );

    // data_dir: a PVC with the embedded store (persistence on), else an emptyDir
    let data = volume_of(&format!(
        "{}/wharf.db",
        config["data_dir"].as_str().unwrap()
    ));
    let pvcs: Vec<String> = find(objs, "PersistentVolumeClaim")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        pvcs.iter().any(|p| p.ends_with("-data")),
        case.data_pvc,
        "{name}: {pvcs:?}"
    );
    assert_eq!(
        pvcs.iter().any(|p| p.ends_with("-registry")),
        case.registry_pvc,
        "{name}: {pvcs:?}"
    );
    assert_eq!(
        data["persistentVolumeClaim"]["claimName"]
            .as_str()
            .is_some(),
        case.data_pvc,
        "{name}: data_dir on the PVC exactly when the embedded store is used (and persistence on)"
    );
    if config["store"]["url"].is_string() {
        assert!(
            data["emptyDir"].is_object(),
            "{name}: no PVC with PostgreSQL"
        );
    }
    let strategy = deploy["spec"]["strategy"]["type"].as_str().unwrap();
    if case.data_pvc || case.registry_pvc {
        assert_eq!(strategy, "Recreate", "{name}");
    }

    // several replicas: PostgreSQL and a PodDisruptionBudget
    assert_eq!(
        find(objs, "PodDisruptionBudget").len() == 1,
        case.replicas > 1,
        "{name}"
    );
    if case.replicas > 1 {
        assert!(config["store"]["url"].is_string(), "{name}");
        assert_eq!(strategy, "RollingUpdate", "{name}");
    }
    let monitors = find(objs, "ServiceMonitor");
    assert_eq!(monitors.len() == 1, case.service_monitor, "{name}");
    if let Some(m) = monitors.first() {
        assert_eq!(m["spec"]["endpoints"][0]["path"], "/metrics", "{name}");
        assert_eq!(m["spec"]["endpoints"][0]["port"], "http", "{name}");
    }
    let svc = one(objs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http", "{name}");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &deploy["spec"]["template"]["metadata"]["labels"][k], v,
            "{name}"
        );
    }

    if case.sidecar {
        let registry = &containers[1];
        let addr = registry["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "REGISTRY_HTTP_ADDR")
            .expect("REGISTRY_HTTP_ADDR");
        assert_eq!(
            addr["value"], "127.0.0.1:5000",
            "{name}: registry on localhost only"
        );
        assert_eq!(
            config["upstream"]["registry"], "http://127.0.0.1:5000",
            "{name}"
        );
        assert!(
            registry["ports"].is_null(),
            "{name}: the registry exposes no port"
        );
        if let Some(cfg) = find(objs, "Secret")
            .into_iter()
            .find_map(|s| s["stringData"]["config.yml"].as_str())
        {
            let rc: serde_yaml_ng::Value = serde_yaml_ng::from_str(cfg).unwrap();
            assert_eq!(
                rc["http"]["addr"].as_str(),
                Some("127.0.0.1:5000"),
                "{name}"
            );
        }
    }

    // the environment check-config gets: literal values, and stand-ins for Secret references
    let env_pairs: Vec<(String, String)> = env
        .iter()
        .map(|e| {
            let k = e["name"].as_str().unwrap().to_string();
            let v = match e["value"].as_str() {
                Some(v) => v.to_string(),
                None => "stand-in-secret-0123456789".to_string(),
            };
            (k, v)
        })
        .collect();
    // every file the config names lies under one of wharf's mounts
    let mut file_keys = Vec::new();
    for key in [
        "upstream.ca_bundle",
        "upstream.client_cert",
        "upstream.client_key",
        "tls.cert",
        "tls.key",
        "store.password_file",
        "users.htpasswd",
    ] {
        let mut v = &config;
        for part in key.split('.') {
            v = &v[part];
        }
        if let Some(path) = v.as_str() {
            volume_of(path);
            file_keys.push(key.to_string());
        }
    }
    (text, env_pairs, file_keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_lints_renders_valid_objects_and_a_config_wharf_accepts() {
    let helm = Helm::new();
    let files = Files::new();
    let work = tempfile::tempdir().unwrap();
    let mut rendered = Vec::new();
    for case in cases(&files) {
        let values = work.path().join(format!("{}.values.yaml", case.name));
        std::fs::write(&values, &case.values).unwrap();
        let values = values.display().to_string();
        let args = helm_args(&case, &values);
        let mut lint = vec!["lint", "--strict", chart_str()];
        lint.extend(args.iter().map(String::as_str));
        helm.run_ok(&lint).await;
        let mut template = vec!["template", "wharf", chart_str(), "--namespace", "registry"];
        template.extend(args.iter().map(String::as_str));
        let out = helm.run_ok(&template).await;
        let path = work.path().join(format!("{}.yaml", case.name));
        std::fs::write(&path, &out.stdout).unwrap();
        rendered.push(path);
        let objs = objects(&out.stdout);
        let (config, env, file_keys) = check_objects(&case, &objs);
        check_config(&case, &config, &env, &file_keys, &files, work.path()).await;
    }
    // the plain manifests too
    for f in ["sidecar.yaml", "standalone.yaml"] {
        rendered.push(repo().join("deploy/kubernetes").join(f));
    }
    let (python, script) = tools::k8s_validator();
    let mut c = tokio::process::Command::new(python);
    c.arg(script).args(&rendered);
    let out = cmd::run(c, crate::common::COMMAND_TIMEOUT).await;
    println!("{}", out.stdout.trim_end());
    let out = out.assert_success();
    let summary = out.stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("validated ") && summary.contains(": 0 failures;"),
        "{out}"
    );
    for kind in [
        "Deployment",
        "Service",
        "Secret",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "ServiceAccount",
    ] {
        assert!(
            summary.contains(&format!("{kind} ")),
            "{kind} validated: {summary}"
        );
    }
}

fn chart_str() -> &'static str {
    static CHART: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CHART.get_or_init(chart)
}

/// `wharf check-config --no-connect` on the rendered config, with the container's environment;
/// each file the config names (a mounted Secret in the pod) is replaced by a local stand-in.
async fn check_config(
    case: &Case,
    config: &str,
    env: &[(String, String)],
    file_keys: &[String],
    files: &Files,
    work: &Path,
) {
    let path: PathBuf = work.join(format!("{}.wharf.yaml", case.name));
    std::fs::write(&path, config).unwrap();
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
    for k in tools::wharf_env_vars() {
        c.env_remove(k);
    }
    for (k, v) in env {
        if k != "WHARF_CONFIG" {
            c.env(k, v);
        }
    }
    for key in file_keys {
        let stand_in = match key.as_str() {
            "upstream.ca_bundle" => "ca.pem",
            "upstream.client_cert" | "tls.cert" => "cert.pem",
            "upstream.client_key" | "tls.key" => "key.pem",
            "store.password_file" => "password",
            "users.htpasswd" => "htpasswd",
            other => panic!("no stand-in for {other}"),
        };
        let var = format!("WHARF_{}", key.replace('.', "__").to_ascii_uppercase());
        c.env(var, files.path(stand_in));
    }
    c.args(["check-config", "--no-connect", "--config"])
        .arg(&path);
    let out = cmd::run(c, crate::common::COMMAND_TIMEOUT).await;
    if !out.success() {
        panic!(
            "{}: the rendered config is refused:\n{config}\n{out}",
            case.name
        );
    }
    assert!(
        out.stdout.contains("admin_password: '***'"),
        "{}: {out}",
        case.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_refuses_values_it_cannot_honour_naming_the_value() {
    let helm = Helm::new();
    let standalone = [
        "--set",
        "mode=standalone",
        "--set",
        "upstream.registry=http://r:5000",
    ];
    let admin = ["--set", "adminPassword=admin-pw-0123"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&standalone[..], &admin[..], &["--set", "replicaCount=2"]].concat(),
            "replicaCount: 2 needs store.url (PostgreSQL",
        ),
        (
            [
                &admin[..],
                &[
                    "--set",
                    "replicaCount=2",
                    "--set",
                    "store.url=postgres://w@db/w",
                ],
            ]
            .concat(),
            "registry.persistence: with replicaCount > 1",
        ),
        (
            [
                &admin[..],
                &[
                    "--set",
                    "replicaCount=2",
                    "--set",
                    "store.url=postgres://w@db/w",
                    "--set",
                    "registry.persistence.enabled=false",
                ],
            ]
            .concat(),
            "registry.config.http.secret",
        ),
        (vec![], "adminPassword: set it"),
        (
            vec!["--set", "adminPassword=short-pw"],
            "adminPassword: must be at least 12 characters",
        ),
        (
            [&admin[..], &["--set", "mode=standalone"]].concat(),
            "upstream.registry: mode standalone needs",
        ),
        (
            [&admin[..], &["--set", "upstream.registry=http://r:5000"]].concat(),
            "upstream.registry: must be empty in mode sidecar",
        ),
        (
            [&admin[..], &["--set", "terminationGracePeriodSeconds=30"]].concat(),
            "terminationGracePeriodSeconds: 30 must be longer",
        ),
        (
            [&admin[..], &["--set", "config.listen=0.0.0.0:1"]].concat(),
            "config.listen: set by the chart",
        ),
        (
            [&admin[..], &["--set", "config.upstream.ca_bundle=/x"]].concat(),
            "config.upstream.ca_bundle: use the value upstream.ca_bundle",
        ),
        (
            [&admin[..], &["--set", "mode=bogus"]].concat(),
            "mode must be one of the following: \"sidecar\", \"standalone\"",
        ),
        (
            [&admin[..], &["--set", "upstream.ca_bundle=not-a-pem"]].concat(),
            "upstream.ca_bundle",
        ),
        (
            [&admin[..], &["--set", "store.url=mysql://db/w"]].concat(),
            "store.url",
        ),
        (
            [&admin[..], &["--set", "replicaCunt=2"]].concat(),
            "Additional property replicaCunt is not allowed",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["template", "wharf", chart_str()];
        a.extend(args.iter().copied());
        let out = helm.run(&a).await.assert_failure();
        assert!(out.stderr.contains(want), "{want:?} not in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_manifests_are_in_sync_with_the_chart() {
    let mut c = tokio::process::Command::new("bash");
    c.arg(repo().join("scripts/render-manifests.sh"))
        .arg("--check")
        .env("HELM", tools::helm());
    cmd::run(c, crate::common::COMMAND_TIMEOUT)
        .await
        .assert_success();
}

/// A child process killed (and reaped) on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `cmd` with output to `log`, and wait until it listens on a port (found in /proc).
async fn spawn_listening(mut cmd: std::process::Command, log: &Path) -> (Proc, u16) {
    let out = std::fs::File::create(log).unwrap();
    cmd.stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let what = cmd::describe(&cmd);
    let mut child = Proc(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}")),
    );
    let pid = child.0.id();
    let port = crate::common::wait_until(
        &format!("{what} listening"),
        crate::common::STARTUP_TIMEOUT,
        || {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!(
                    "{what} exited ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let port = crate::common::procfs::listening_ports(pid)
                .ok()
                .and_then(|p| p.first().copied());
            async move { port }
        },
    )
    .await;
    (child, port)
}

/// The sidecar pod as the chart renders it, its two containers run here as processes: the real
/// docker-registry with the rendered config.yml and the container's environment, wharf with the
/// rendered wharf.yaml and its container's environment. Only what a laptop cannot have is moved:
/// ports (free ones instead of 5000 and 8080) and directories (temp dirs instead of the volumes).
/// skopeo pushes and pulls through wharf and the push is an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_pod_from_the_chart_serves_skopeo_with_the_real_registry() {
    let helm = Helm::new();
    let out = helm
        .run_ok(&[
            "template",
            "wharf",
            chart_str(),
            "--set",
            "adminPassword=s3cret-admin",
        ])
        .await;
    let objs = objects(&out.stdout);
    let secrets = find(&objs, "Secret");
    let text_of = |key: &str| {
        secrets
            .iter()
            .find_map(|s| s["stringData"][key].as_str())
            .unwrap_or_else(|| panic!("no Secret with {key}"))
            .to_string()
    };
    let pod = &one(&objs, "Deployment")["spec"]["template"]["spec"];
    let container_env = |name: &str| -> Vec<(String, String)> {
        pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["value"].as_str().expect("literal env").to_string(),
                )
            })
            .collect()
    };
    let dir = tempfile::Builder::new()
        .prefix("wharf-it-pod-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    std::fs::write(d.join("config.yml"), text_of("config.yml")).unwrap();
    std::fs::write(d.join("wharf.yaml"), text_of("wharf.yaml")).unwrap();

    let mut registry = std::process::Command::new(tools::docker_registry());
    registry.arg("serve").arg(d.join("config.yml"));
    for (k, v) in container_env("registry") {
        registry.env(k, v);
    }
    registry.env("REGISTRY_HTTP_ADDR", "127.0.0.1:0").env(
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
        d.join("storage"),
    );
    let (_registry, registry_port) = spawn_listening(registry, &d.join("registry.log")).await;

    let mut wharf = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
    for k in tools::wharf_env_vars() {
        wharf.env_remove(k);
    }
    for (k, v) in container_env("wharf") {
        wharf.env(k, v);
    }
    wharf
        .arg("serve")
        .env("WHARF_CONFIG", d.join("wharf.yaml"))
        .env("WHARF_LISTEN", "127.0.0.1:0")
        .env("WHARF_DATA_DIR", d.join("data"))
        .env(
            "WHARF_UPSTREAM__REGISTRY",
            format!("http://127.0.0.1:{registry_port}"),
        );
    let (_wharf, port) = spawn_listening(wharf, &d.join("wharf.log")).await;
    let base = format!("http://127.0.0.1:{port}");
    crate::common::wait_until("/readyz 200", crate::common::STARTUP_TIMEOUT, || async {
        let r = crate::common::client()
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let image = crate::common::oci::build_image(&d.join("src"), "v1", &[32 * 1024]);
    let skopeo = crate::common::Skopeo::new();
    let remote = format!("docker://127.0.0.1:{port}/prj/pod:v1");
    skopeo.copy_ok(&image.oci_ref(), &remote, &[]).await;
    let pulled = d.join("out");
    skopeo
        .copy_ok(&remote, &format!("oci:{}:v1", pulled.display()), &[])
        .await;
    assert_eq!(
        crate::common::oci::layout_digest(&pulled, "v1"),
        Some(image.digest.clone())
    );
    let events: Value = crate::common::client()
        .get(format!("{base}/api/v1/events?type=PUSH_ARTIFACT"))
        .basic_auth("admin", Some("s3cret-admin"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");
}

/// Copy the chart into `dir` with one more template that renders NOTES.txt into a ConfigMap, so
/// `helm template` (which skips NOTES.txt, shown only by a real install) shows it.
fn chart_with_rendered_notes(dir: &Path) -> String {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }
    let root = dir.join("wharf");
    copy(&repo().join("deploy/helm/wharf"), &root);
    let notes = std::fs::read_to_string(root.join("templates/NOTES.txt")).unwrap();
    std::fs::write(
        root.join("templates/notes-for-test.yaml"),
        format!(
            "{{{{- define \"test.notes\" }}}}\n{notes}\n{{{{- end }}}}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{{{ include \"test.notes\" . | toJson }}}}\n"
        ),
    )
    .unwrap();
    root.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_say_how_to_reach_the_registry_the_api_and_the_ui() {
    let helm = Helm::new();
    let dir = tempfile::tempdir().unwrap();
    let chart = chart_with_rendered_notes(dir.path());
    for (args, mode_line, password) in [
        (
            vec!["--set", "adminPassword=admin-pw-0123"],
            "the registry runs in the same pod on 127.0.0.1:5000",
            "the value of adminPassword",
        ),
        (
            vec![
                "--set",
                "mode=standalone",
                "--set",
                "upstream.registry=http://registry.registry.svc:5000",
                "--set",
                "existingSecret=wharf-credentials",
            ],
            "wharf forwards to the registry at http://registry.registry.svc:5000",
            "get secret wharf-credentials",
        ),
    ] {
        let mut a = vec![
            "template",
            "wharf",
            chart.as_str(),
            "--namespace",
            "registry",
            "--show-only",
            "templates/notes-for-test.yaml",
        ];
        a.extend(args);
        let out = helm.run_ok(&a).await;
        let objs = objects(&out.stdout);
        let notes = one(&objs, "ConfigMap")["data"]["notes"]
            .as_str()
            .unwrap()
            .to_string();
        for want in [
            mode_line,
            "http://wharf.registry.svc:8080",
            "port-forward service/wharf 8080:8080",
            "/v2/",
            "/api/v2.0/projects/PROJECT/webhook/policies",
            "/ui/",
            "/healthz",
            "/readyz",
            password,
        ] {
            assert!(notes.contains(want), "{want:?} not in NOTES:\n{notes}");
        }
    }
}
