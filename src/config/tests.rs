use super::*;

const PW: &str = "s3cret-password";
const MIN: &str =
    "upstream: {registry: \"http://127.0.0.1:5000\"}\nadmin_password: s3cret-password\n";

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_yaml_with_env(
        text,
        Path::new("test.yaml"),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

/// The message `load` refuses `text` with; a config it accepts fails the test naming the text
/// (not the whole `Config`, as `unwrap_err` would print).
fn refused(text: &str, env: &[(&str, &str)]) -> String {
    match load(text, env) {
        Ok(_) => panic!("accepted, expected a refusal:\n{text}\nenv: {env:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let c = load(MIN, &[]).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.external_base(), "http://127.0.0.1:8080");
    assert_eq!(c.log.format, LogFormat::Text);
}

#[test]
fn store_url_is_checked_and_its_password_masked() {
    let c = load(
        MIN,
        &[(
            "WHARF_STORE__URL",
            "postgres://wharf:s3cr%40t@db.internal:6432/wharf?sslmode=require&application_name=w1",
        )],
    )
    .unwrap();
    let t = c.store.url.as_ref().unwrap().parse().unwrap();
    assert_eq!(
        (t.user.as_str(), t.host.as_str(), t.port, t.dbname.as_str()),
        ("wharf", "db.internal", 6432, "wharf")
    );
    assert_eq!(t.password.as_ref().map(Secret::expose), Some("s3cr@t"));
    assert_eq!(t.sslmode, SslMode::Require);
    assert_eq!(t.application_name.as_deref(), Some("w1"));
    let shown = c.to_masked_yaml();
    assert!(!shown.contains("s3cr"), "{shown}");
    assert!(
        shown.contains("postgres://wharf:***@db.internal:6432/wharf"),
        "{shown}"
    );
    assert!(!format!("{c:?}").contains("s3cr"));
    for (url, why) in [
        ("mysql://u@h/db", "postgres://"),
        ("postgres://h/db", "no user"),
        ("postgres://u@/db", "host"),
        ("postgres://u@h", "one database"),
        ("postgres://u@h/db?sslmode=maybe", "sslmode"),
        ("postgres://u@h/db?pool=3", "unknown parameter"),
        // before: 0 refused every connection; the largest number panicked at start
        ("postgres://u@h/db?connect_timeout=0", "between 1 and 3600"),
        (
            "postgres://u@h/db?connect_timeout=18446744073709551615",
            "between 1 and 3600",
        ),
        ("postgres://u:hunter2@h:99999/db", "not a URL"),
        ("not a url", "not a URL"),
    ] {
        let err = refused(&format!("{MIN}store: {{url: \"{url}\"}}\n"), &[]);
        assert!(err.starts_with("store.url: "), "{url}: {err}");
        assert!(err.contains(why), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    let err = refused(
        &format!("{MIN}store: {{password_file: /nonexistent}}\n"),
        &[],
    );
    assert!(err.starts_with("store.password_file"), "{err}");
    let err = refused(&format!("{MIN}store: {{claim_lease: 2s}}\n"), &[]);
    assert!(err.starts_with("store.claim_lease"), "{err}");
    for bad in ["50ms", "2h"] {
        let err = refused(&format!("{MIN}store: {{statement_timeout: {bad}}}\n"), &[]);
        assert!(err.starts_with("store.statement_timeout"), "{bad}: {err}");
    }
}

#[test]
fn unknown_key_is_rejected_with_its_path() {
    let err = refused(&format!("{MIN}upstream2: x\n"), &[]);
    assert!(err.contains("upstream2"), "{err}");
    let err = refused(
        "upstream: {registry: \"http://x\", regsitry: 1}\nadmin_password: s3cret-password\n",
        &[],
    );
    assert!(err.starts_with("upstream"), "{err}");
    assert!(err.contains("regsitry"), "{err}");
}

#[test]
fn env_overrides_nested_keys_and_scalars() {
    let c = load(
        MIN,
        &[
            ("WHARF_UPSTREAM__REGISTRY", "http://10.0.0.1:5000"),
            ("WHARF_SHUTDOWN_GRACE", "5s"),
            ("WHARF_LOG__FORMAT", "json"),
            ("WHARF_PROJECTS__PRJ__PUBLIC", "true"),
            ("WHARF_CONFIG", "/ignored.yaml"),
        ],
    )
    .unwrap();
    assert_eq!(c.upstream.registry, "http://10.0.0.1:5000");
    assert_eq!(c.shutdown_grace, Duration::from_secs(5));
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.project("prj").public);
}

#[test]
fn env_override_with_unknown_key_names_it() {
    let err = refused(MIN, &[("WHARF_NOPE", "1")]);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn validation_names_the_key() {
    let err = refused(
        "upstream: {registry: \"ftp://x\"}\nadmin_password: s3cret-password\n",
        &[],
    );
    assert!(err.starts_with("upstream.registry:"), "{err}");
    let err = refused(
        "upstream: {registry: \"http://x\"}\nadmin_password: \"\"\n",
        &[],
    );
    assert!(err.starts_with("admin_password:"), "{err}");
    let err = refused(&format!("{MIN}shutdown_grace: soon\n"), &[]);
    assert!(err.starts_with("shutdown_grace:"), "{err}");
    let err = refused("admin_password: s3cret-password\n", &[]);
    assert!(err.contains("upstream"), "{err}");
    let err = refused(&format!("{MIN}tls: {{cert: /nonexistent, key: /x}}\n"), &[]);
    assert!(err.starts_with("tls.cert:"), "{err}");
}

#[test]
fn worker_threads_are_auto_or_a_count() {
    let c = load(MIN, &[]).unwrap();
    assert_eq!(c.server.worker_threads, WorkerThreads::Auto);
    assert!(c.server.worker_threads.resolve() >= 1);
    let c = load(&format!("{MIN}server: {{worker_threads: 1}}\n"), &[]).unwrap();
    assert_eq!(c.server.worker_threads, WorkerThreads::Count(1));
    assert_eq!(c.server.worker_threads.resolve(), 1);
    let c = load(&format!("{MIN}server: {{worker_threads: auto}}\n"), &[]).unwrap();
    assert_eq!(c.server.worker_threads, WorkerThreads::Auto);
    let c = load(MIN, &[("WHARF_SERVER__WORKER_THREADS", "3")]).unwrap();
    assert_eq!(c.server.worker_threads, WorkerThreads::Count(3));
    let c = load(MIN, &[("WHARF_SERVER__WORKER_THREADS", "auto")]).unwrap();
    assert_eq!(c.server.worker_threads, WorkerThreads::Auto);
    for bad in ["0", "1025", "many", "-1"] {
        let err = refused(&format!("{MIN}server: {{worker_threads: {bad}}}\n"), &[]);
        assert!(err.starts_with("server.worker_threads"), "{bad}: {err}");
    }
    // shown as written by check-config
    let shown = serde_yaml_ng::to_string(&load(MIN, &[]).unwrap().server).unwrap();
    assert!(shown.contains("worker_threads: auto"), "{shown}");
}

#[test]
fn pull_filter_patterns_are_checked() {
    let err = refused(
        &format!("{MIN}events: {{ignore_pulls: {{user_agents: [\"Trivy/*\", \"[\"]}}}}\n"),
        &[],
    );
    assert!(
        err.starts_with("events.ignore_pulls.user_agents[1]: \"[\" is not a valid pattern"),
        "{err}"
    );
    let err = refused(
        &format!("{MIN}projects: {{prj: {{ignore_pulls: {{users: [\"{{a,b\"]}}}}}}\n"),
        &[],
    );
    assert!(
        err.starts_with("projects.prj.ignore_pulls.users[0]: "),
        "{err}"
    );
    // a pattern whose braces expand to 128 patterns: refused, it would slow every pull
    let err = refused(
        &format!(
            "{MIN}events: {{ignore_pulls: {{users: [\"{}\"]}}}}\n",
            "{a,b}".repeat(7)
        ),
        &[],
    );
    assert!(
        err.starts_with("events.ignore_pulls.users[0]: ")
            && err.contains("the braces expand to more than 64 alternatives"),
        "{err}"
    );
}

#[test]
fn harbor_api_keys_default_to_harbors_behaviour_and_name_themselves() {
    let c = load(MIN, &[]).unwrap();
    assert!(c.api.reveal_auth_header);
    assert_eq!(c.events.multi_platform, MultiPlatform::OneEvent);
    let c = load(
        &format!(
            "{MIN}api: {{reveal_auth_header: false}}\nevents: {{multi_platform: per_manifest}}\n"
        ),
        &[],
    )
    .unwrap();
    assert!(!c.api.reveal_auth_header);
    assert_eq!(c.events.multi_platform, MultiPlatform::PerManifest);
    let err = refused(&format!("{MIN}events: {{multi_platform: bogus}}\n"), &[]);
    assert!(err.starts_with("events.multi_platform:"), "{err}");
    let err = refused(&format!("{MIN}api: {{reveal_auth_header: maybe}}\n"), &[]);
    assert!(err.starts_with("api.reveal_auth_header:"), "{err}");
    let err = refused(&format!("{MIN}api: {{reveal: true}}\n"), &[]);
    assert!(err.starts_with("api.reveal:"), "{err}");
}

#[test]
fn quotas_need_events() {
    let err = refused(
        &format!("{MIN}events: {{enabled: false}}\nprojects: {{prj: {{storage_limit: 10GiB}}}}\n"),
        &[],
    );
    assert!(err.starts_with("projects.prj.storage_limit:"), "{err}");
    let c = load(
        &format!("{MIN}projects: {{prj: {{storage_limit: 10GiB}}}}\n"),
        &[],
    )
    .unwrap();
    assert_eq!(c.project("prj").storage_limit, Some(10 << 30));
    assert_eq!(c.store.retention, Duration::from_secs(30 * 86400));
    assert_eq!(c.store.retention_pulls, Duration::from_secs(7 * 86400));
    let c = load(MIN, &[("WHARF_STORE__RETENTION_PULLS", "2d")]).unwrap();
    assert_eq!(c.store.retention_pulls, Duration::from_secs(2 * 86400));
}

#[test]
fn secrets_are_masked() {
    let c = load(MIN, &[]).unwrap();
    let printed = c.to_masked_yaml();
    assert!(printed.contains("admin_password: '***'"), "{printed}");
    assert!(!format!("{c:?}").contains(PW));
}

// Hardening 5 ---------------------------------------------------------------------------

#[test]
fn env_values_of_secret_keys_are_taken_literally() {
    for secret in [
        "S3cret #tail-of-it",
        "\"quoted-password\"",
        "!!str not-a-tag-x",
        "123456789012345",
        "'single' & {braces}: [x]",
        " leading and trailing ",
    ] {
        let c = load(
            MIN,
            &[
                ("WHARF_ADMIN_PASSWORD", secret),
                ("WHARF_SIDE_API_TOKEN", &format!("{secret}{secret}")),
                (
                    "WHARF_STORE__URL",
                    &format!(
                        "postgres://u:{}@db/w",
                        percent_encoding::utf8_percent_encode(
                            secret,
                            percent_encoding::NON_ALPHANUMERIC
                        )
                    ),
                ),
            ],
        )
        .unwrap_or_else(|e| panic!("{secret:?}: {e}"));
        assert_eq!(
            c.store.password().unwrap().as_ref().map(Secret::expose),
            Some(secret)
        );
        assert_eq!(c.admin_password.expose(), secret);
        assert_eq!(
            c.side_api_token.as_ref().map(Secret::expose),
            Some(format!("{secret}{secret}").as_str())
        );
    }
    // other keys are still YAML scalars
    let c = load(MIN, &[("WHARF_SHUTDOWN_GRACE", "7")]).unwrap();
    assert_eq!(c.shutdown_grace, Duration::from_secs(7));
}

#[test]
fn secrets_are_never_part_of_an_error() {
    // a number where a secret belongs: refused without its value
    for text in [
        "upstream: {registry: \"http://x\"}\nadmin_password: 918273645546372819\n".to_string(),
        format!("{MIN}side_api_token: 918273645546372819\n"),
        format!("{MIN}store: {{url: 918273645546372819}}\n"),
        format!("{MIN}side_api_token: [918273645546372819]\n"),
    ] {
        let err = refused(&text, &[]);
        assert!(!err.contains("918273645546372819"), "{err}");
        assert!(err.contains("must be a string"), "{err}");
    }
    for (var, value) in [
        ("WHARF_ADMIN_PASSWORD", "9182736"),
        ("WHARF_SIDE_API_TOKEN", "9182736"),
    ] {
        let err = refused(MIN, &[(var, value)]);
        assert!(!err.contains(value), "{err}");
        assert!(err.contains("at least"), "{err}");
    }
}

#[test]
fn admin_password_has_a_minimum_length() {
    let err = refused(
        "upstream: {registry: \"http://x\"}\nadmin_password: elevenchars\n",
        &[],
    );
    assert_eq!(err, "admin_password: must be at least 12 characters");
    // characters, not bytes: 12 × "ä" is long enough
    let c = load(MIN, &[("WHARF_ADMIN_PASSWORD", &"ä".repeat(12))]).unwrap();
    assert_eq!(c.admin_password.expose().chars().count(), 12);
    let err = refused(MIN, &[("WHARF_ADMIN_PASSWORD", &"ä".repeat(11))]);
    assert!(err.starts_with("admin_password:"), "{err}");
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("admin");
    std::fs::write(&pw, "from-a-file #1 \"x\"\n").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "side-token-from-a-file\r\n").unwrap();
    let pg = dir.path().join("pg");
    std::fs::write(&pg, "pg password\n\n").unwrap();
    let text = format!(
        "upstream: {{registry: \"http://x\"}}\nadmin_password_file: {}\nside_api_token_file: {}\nstore: {{url: \"postgres://u:inurl@h/db\", password_file: {}}}\n",
        pw.display(),
        token.display(),
        pg.display()
    );
    let c = load(&text, &[]).unwrap();
    assert_eq!(c.admin_password.expose(), "from-a-file #1 \"x\"");
    assert_eq!(
        c.side_api_token.as_ref().map(Secret::expose),
        Some("side-token-from-a-file")
    );
    // one trailing newline is dropped, not more
    assert_eq!(
        c.store.password().unwrap().as_ref().map(Secret::expose),
        Some("pg password\n")
    );
    let shown = c.to_masked_yaml();
    assert!(!shown.contains("from-a-file"), "{shown}");
    // the file names may come from env too, literally
    let c = load(
        "upstream: {registry: \"http://x\"}\n",
        &[("WHARF_ADMIN_PASSWORD_FILE", pw.to_str().unwrap())],
    )
    .unwrap();
    assert_eq!(c.admin_password.expose(), "from-a-file #1 \"x\"");
    // not both; a missing file names the key; a short password in a file is refused
    let err = refused(
        &format!("{MIN}admin_password_file: {}\n", pw.display()),
        &[],
    );
    assert!(err.starts_with("admin_password_file: "), "{err}");
    let e = load(
        "upstream: {registry: \"http://x\"}\nadmin_password_file: /nonexistent/pw\n",
        &[],
    )
    .unwrap_err();
    let err = e.to_string();
    assert!(
        err.starts_with("admin_password_file: cannot read /nonexistent/pw"),
        "{err}"
    );
    // the read's error is kept as the cause
    assert!(
        std::error::Error::source(&e).is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
        "{e:?}"
    );
    std::fs::write(&pw, "short\n").unwrap();
    let err = refused(
        &format!(
            "upstream: {{registry: \"http://x\"}}\nadmin_password_file: {}\n",
            pw.display()
        ),
        &[],
    );
    assert!(err.starts_with("admin_password: must be at least"), "{err}");
    assert!(!err.contains("short"), "{err}");
    let err = refused(
        &format!(
            "{MIN}side_api_token: side-token-0123456789\nside_api_token_file: {}\n",
            token.display()
        ),
        &[],
    );
    assert!(err.starts_with("side_api_token_file: "), "{err}");
}

// Hardening 6 ---------------------------------------------------------------------------

#[test]
fn kubernetes_service_links_are_ignored() {
    let links = [
        ("WHARF_PORT", "tcp://10.96.0.12:8080"),
        ("WHARF_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
        ("WHARF_PORT_8080_TCP_PROTO", "tcp"),
        ("WHARF_PORT_8080_TCP_PORT", "8080"),
        ("WHARF_PORT_8080_TCP_ADDR", "10.96.0.12"),
        ("WHARF_SERVICE_HOST", "10.96.0.12"),
        ("WHARF_SERVICE_PORT", "8080"),
        ("WHARF_SERVICE_PORT_HTTP", "8080"),
        // a Service named wharf-postgresql (a Helm release's database)
        ("WHARF_POSTGRESQL_SERVICE_HOST", "10.96.0.13"),
        ("WHARF_POSTGRESQL_SERVICE_PORT", "5432"),
        ("WHARF_POSTGRESQL_PORT", "tcp://10.96.0.13:5432"),
        ("WHARF_POSTGRESQL_PORT_5432_TCP", "tcp://10.96.0.13:5432"),
        ("WHARF_POSTGRESQL_PORT_5432_TCP_ADDR", "10.96.0.13"),
        ("WHARF_METRICS_PORT_9090_UDP_PROTO", "udp"),
        ("WHARF_X_PORT_53_SCTP", "sctp://10.0.0.1:53"),
    ];
    let env: Vec<(&str, &str)> = links
        .iter()
        .copied()
        .chain([("WHARF_LOG__FORMAT", "json")])
        .collect();
    let c = load(MIN, &env).unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    for (var, value) in links {
        assert!(is_kubernetes_service_link(var, value), "{var}");
    }
    // other unknown WHARF_* variables still fail, naming the variable
    for (var, value) in [
        ("WHARF_PORT", "8080"),
        ("WHARF_NOPE", "1"),
        ("WHARF_PORT_HTTP", "tcp://x:1"),
        ("WHARF_SERVICE_HOSTS", "x"),
        ("WHARF_SERVER__PORT_80_TCP_ADDR", "x"),
        ("WHARF_SERVER__SERVICE_HOST", "x"),
    ] {
        assert!(!is_kubernetes_service_link(var, value), "{var}");
        let err = refused(MIN, &[(var, value)]);
        assert!(err.contains(var), "{var}: {err}");
    }
}

#[test]
fn no_config_key_looks_like_a_service_link() {
    // keys shaped like a service link would be ignored when set from env
    fn keys(v: &serde_yaml_ng::Value, prefix: &str, out: &mut Vec<String>) {
        if let serde_yaml_ng::Value::Mapping(m) = v {
            for (k, v) in m {
                let k = k.as_str().unwrap_or_default();
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}__{k}")
                };
                out.push(path.clone());
                if k != "projects" {
                    keys(v, &path, out);
                }
            }
        }
    }
    let c = load(include_str!("../../config/wharf.example.yaml"), &[]).unwrap();
    let mut all = Vec::new();
    keys(&serde_yaml_ng::to_value(&c).unwrap(), "", &mut all);
    assert!(all.len() > 40, "{all:?}");
    for k in all {
        let var = format!("WHARF_{}", k.to_ascii_uppercase());
        assert!(
            !is_kubernetes_service_link(&var, "tcp://10.0.0.1:1"),
            "{var} would be ignored"
        );
    }
}

#[test]
fn upstream_tls_files_are_checked_naming_the_key() {
    let f = crate::pem::TestFiles::new();
    let ca = f.write("ca.pem", &format!("{0}{0}", f.cert_pem));
    let ca = ca.display().to_string();
    let key_pem = f.key.display().to_string();
    let other_pem = f.other_key.display().to_string();
    let junk = f.junk.display().to_string();
    let up = |extra: &str| {
        format!(
            "upstream: {{registry: \"https://127.0.0.1:5000\", {extra}}}\nadmin_password: a-long-password\n"
        )
    };
    let c = load(
        &up(&format!(
            "ca_bundle: \"{ca}\", client_cert: \"{ca}\", client_key: \"{key_pem}\""
        )),
        &[],
    )
    .unwrap();
    assert_eq!(c.upstream.ca_bundle.as_deref(), Some(Path::new(&ca)));
    assert!(c.to_masked_yaml().contains("ca_bundle:"));
    let min = load(MIN, &[]).unwrap();
    assert!(
        !min.to_masked_yaml().contains("client_cert"),
        "unset keys not printed"
    );
    for (extra, key, why) in [
        (
            "ca_bundle: /nonexistent/ca.pem",
            "upstream.ca_bundle",
            "/nonexistent/ca.pem",
        ),
        (
            &format!("ca_bundle: \"{junk}\""),
            "upstream.ca_bundle",
            "no certificate",
        ),
        (
            &format!("client_cert: \"{ca}\""),
            "upstream.client_key",
            "client_cert",
        ),
        (
            &format!("client_key: \"{key_pem}\""),
            "upstream.client_cert",
            "client_key",
        ),
        (
            &format!("client_cert: \"{ca}\", client_key: \"{ca}\""),
            "upstream.client_key",
            "no private key",
        ),
        (
            &format!("client_cert: \"{ca}\", client_key: \"{other_pem}\""),
            "upstream.client_key",
            "",
        ),
        (
            &format!("client_cert: \"{junk}\", client_key: \"{key_pem}\""),
            "upstream.client_cert",
            "no certificate",
        ),
    ] {
        let err = refused(&up(extra), &[]);
        assert!(err.starts_with(&format!("{key}: ")), "{extra}: {err}");
        assert!(err.contains(why), "{extra}: {err}");
    }
}

/// The listener's files, the webhook client's CA bundle and PostgreSQL's `sslrootcert` are
/// read at validation (check-config too), not first when wharf starts serving.
#[test]
fn tls_files_are_checked_naming_the_key() {
    let f = crate::pem::TestFiles::new();
    let path = |p: &std::path::Path| p.display().to_string();
    let (cert, key, other, junk) = (
        path(&f.cert),
        path(&f.key),
        path(&f.other_key),
        path(&f.junk),
    );
    let pg = |root: &str| {
        format!(
            "store: {{url: \"postgres://w@127.0.0.1/w?sslmode=verify-full&sslrootcert={root}\"}}"
        )
    };
    for ok in [
        format!("tls: {{cert: \"{cert}\", key: \"{key}\"}}"),
        format!("notification: {{ca_bundle: \"{cert}\"}}"),
        format!("events: {{token_cert_bundle: \"{cert}\"}}"),
        pg(&cert),
    ] {
        load(&format!("{MIN}{ok}\n"), &[]).unwrap();
    }
    for (extra, key, why) in [
        (
            format!("tls: {{cert: \"{junk}\", key: \"{key}\"}}"),
            "tls.cert",
            "no certificate",
        ),
        (
            format!("tls: {{cert: \"{cert}\", key: \"{cert}\"}}"),
            "tls.key",
            "no private key",
        ),
        (
            format!("tls: {{cert: \"{cert}\", key: \"{other}\"}}"),
            "tls.key",
            "does not fit tls.cert",
        ),
        (
            format!("notification: {{ca_bundle: \"{junk}\"}}"),
            "notification.ca_bundle",
            "no certificate",
        ),
        (pg(&junk), "store.url", "no certificate"),
        (
            format!("events: {{token_cert_bundle: \"{junk}\"}}"),
            "events.token_cert_bundle",
            "no certificate",
        ),
    ] {
        let err = refused(&format!("{MIN}{extra}\n"), &[]);
        assert!(err.starts_with(key), "{extra}: {err}");
        assert!(err.contains(why), "{extra}: {err}");
    }
}

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../config/wharf.example.yaml");
    let c = load(text, &[]).unwrap();
    assert_eq!(c.external_host(), "registry.example.com");
}

/// regression: a duration too large for the clock (`1e20` seconds panicked while loading; a
/// huge whole number of seconds loaded and panicked later, when added to the clock) and a
/// webhook timeout near `u64::MAX` (its lease check overflowed) are refused naming the key.
#[test]
fn durations_beyond_any_clock_are_refused_naming_the_key() {
    for (text, env, key) in [
        ("", ("WHARF_SHUTDOWN_GRACE", "1e20"), "shutdown_grace"),
        (
            "server: {idle_timeout: 18446744073709551615}\n",
            ("", ""),
            "server.idle_timeout",
        ),
        (
            "server: {header_timeout: \"900000000 years\"}\n",
            ("", ""),
            "server.header_timeout",
        ),
        (
            "notification: {webhook_job_http_client_timeout: 18446744073709551615}\n",
            ("", ""),
            "notification.webhook_job_http_client_timeout",
        ),
    ] {
        let env: Vec<(&str, &str)> = [env].into_iter().filter(|(k, _)| !k.is_empty()).collect();
        let err = refused(&format!("{MIN}{text}"), &env);
        assert!(err.contains(key), "{text}{env:?}: {err}");
    }
    // the largest accepted
    let c = load(
        &format!("{MIN}server: {{idle_timeout: \"100 years\"}}\n"),
        &[],
    )
    .unwrap();
    assert!(c.server.idle_timeout > Duration::from_secs(3_000_000_000));
}

/// regression: counts that size a semaphore or a pool were only checked for 0; one beyond a
/// semaphore's range (tokio's: `usize::MAX >> 3`) panicked at start.
#[test]
fn counts_beyond_any_use_are_refused_naming_the_key() {
    for (text, key) in [
        (
            "server: {max_connections: 18446744073709551615}",
            "server.max_connections",
        ),
        (
            "notification: {max_in_flight: 18446744073709551615}",
            "notification.max_in_flight",
        ),
        (
            "notification: {per_target_concurrency: 18446744073709551615}",
            "notification.per_target_concurrency",
        ),
        (
            "store: {pool_size: 18446744073709551615}",
            "store.pool_size",
        ),
    ] {
        let err = refused(&format!("{MIN}{text}\n"), &[]);
        assert!(
            err.contains(key) && err.contains("at most"),
            "{text}: {err}"
        );
    }
}
