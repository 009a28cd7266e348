//! A private PostgreSQL cluster for the test run (Debian's `postgresql` package binaries).
//!
//! Started once per test binary, on first use: `initdb` into a temp dir (as the `postgres`
//! user when the tests run as root — PostgreSQL refuses to run as root), then `postgres`
//! listening on 127.0.0.1 at a free port and on a unix socket in that temp dir, with password
//! authentication over TCP, and TLS offered (a server certificate for `localhost` from a
//! private CA made at start: [`Cluster::ca_file`]). Never a system-wide service. Each test
//! gets its own database ([`database`]), so tests run in parallel without seeing each other.
//!
//! Stopping: the server runs under a small shell that waits on a pipe from this process; when
//! the test binary exits (however it exits) the pipe closes, the shell stops the server
//! (fast shutdown) and removes the temp dir.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::tools;

/// The superuser of the test cluster.
pub const USER: &str = "wharf";
/// Its password (TCP connections use scram-sha-256).
pub const PASSWORD: &str = "wharf-test-Pw-7c1e";

const INSTALL_HINT: &str =
    "run `make deps` (apt-get install -y postgresql; the tests start their own cluster)";

/// The running cluster.
pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    /// The CA that signed the server certificate (PEM), and another CA; readable by anyone.
    pub ca_file: PathBuf,
    pub other_ca_file: PathBuf,
    /// Kept open while the test binary runs; closing it stops the server.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// The directory with `initdb` and `postgres`: the newest `/usr/lib/postgresql/<v>/bin`, else
/// `PATH`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").is_file() && p.join("initdb").is_file())
        .collect();
    found.sort();
    if let Some(dir) = found.pop() {
        return dir;
    }
    match tools::find_on_path("postgres") {
        Some(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => panic!(
            "\n\n*** PostgreSQL (initdb, postgres) not found in /usr/lib/postgresql/*/bin nor on PATH ***\n*** {INSTALL_HINT} ***\n\n"
        ),
    }
}

/// `cmd` run as the `postgres` user when this process is root (it exec's: no extra process).
fn as_db_user(program: &Path) -> Command {
    if tools::is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--reset-env",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port for postgres")
}

/// A CA, and a server certificate for `localhost` it signed: (ca, server cert, server key,
/// another CA), PEM.
fn certificates() -> (String, String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca = |cn: &str| {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("CA certificate");
        (cert.pem(), Issuer::new(p, key))
    };
    let (ca_pem, issuer) = ca("wharf test PostgreSQL CA");
    let key = KeyPair::generate().expect("server key");
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).expect("server certificate");
    let (other, _) = ca("another CA");
    (ca_pem, cert.pem(), key.serialize_pem(), other)
}

fn start() -> Cluster {
    let bin = bin_dir();
    let dir = tempfile::Builder::new()
        .prefix("wharf-it-postgres-")
        .tempdir()
        .expect("postgres temp dir")
        .keep();
    let data = dir.join("data");
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, PASSWORD).expect("password file");
    let (ca, server_cert, server_key, other_ca) = certificates();
    let (ca_file, other_ca_file) = (dir.join("ca.pem"), dir.join("other-ca.pem"));
    std::fs::write(&ca_file, ca).expect("ca.pem");
    std::fs::write(&other_ca_file, other_ca).expect("other-ca.pem");
    std::fs::write(dir.join("server.pem"), server_cert).expect("server.pem");
    std::fs::write(dir.join("server.key"), server_key).expect("server.key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("server.key mode");
        // the temp dir itself: readable by the test process when postgres owns it
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("temp dir mode");
    }
    if tools::is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown the postgres temp dir");
        assert!(status.success(), "chown of {} failed", dir.display());
    }
    let out = as_db_user(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            USER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        .output()
        .unwrap_or_else(|e| panic!("initdb: {e}\n*** {INSTALL_HINT} ***"));
    assert!(
        out.status.success(),
        "initdb failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for attempt in 0..5 {
        let port = free_port();
        let log = dir.join("postgres.log");
        let postgres = format!(
            "{} -D {} -p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB \
             -c ssl=on -c ssl_cert_file={d}/server.pem -c ssl_key_file={d}/server.key",
            bin.join("postgres").display(),
            data.display(),
            dir.display(),
            d = dir.display()
        );
        let runner = if tools::is_root() {
            format!(
                "setpriv --reuid=postgres --regid=postgres --init-groups --reset-env {postgres}"
            )
        } else {
            postgres
        };
        // the server lives while our end of the pipe is open
        let script = format!(
            "{runner} >>{log} 2>&1 & pid=$!; read _; kill -INT $pid; wait $pid; rm -rf {dir}",
            log = log.display(),
            dir = dir.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting postgres");
        let stdin = child.stdin.take().expect("piped stdin");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // the port answers; wait until it accepts logins (startup done). Started once
                // per test run, from a `OnceLock`, before any test uses the cluster.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(200));
                return Cluster {
                    port,
                    dir,
                    ca_file,
                    other_ca_file,
                    _stdin: Mutex::new(stdin),
                    _child: Mutex::new(child),
                };
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            #[allow(clippy::disallowed_methods)] // as above
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        drop(stdin);
        let _ = child.wait();
        if attempt == 4 || !log.contains("could not bind") {
            panic!("postgres did not start on port {port}:\n{log}");
        }
    }
    unreachable!("postgres start attempts");
}

/// The cluster of this test run (started on first use).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start)
}

impl Cluster {
    /// `postgres://wharf:…@127.0.0.1:<port>/<db>` (no TLS).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// The URL of `db` at `host` with the given query (e.g. `sslmode=verify-full&sslrootcert=…`).
    pub fn url_with(&self, host: &str, db: &str, query: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@{host}:{}/{db}?{query}",
            self.port
        )
    }

    /// A session of its own on database `db` (e.g. to hold a lock), with its connection's task.
    pub async fn session(
        &self,
        db: &str,
    ) -> (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ) {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={db}",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}"));
        (client, tokio::spawn(conn))
    }

    /// The one integer that `sql` returns on database `db` (e.g. a count).
    pub async fn int(&self, db: &str, sql: &str) -> i64 {
        let (client, task) = self.session(db).await;
        let n = client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0);
        drop(client);
        let _ = task.await;
        n
    }

    /// Run SQL as the superuser on database `db`.
    pub async fn execute(&self, db: &str, sql: &str) {
        let (client, task) = self.session(db).await;
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        drop(client);
        let _ = task.await;
    }
}

/// A new, empty database in the test cluster; its URL.
pub async fn database() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let c = cluster();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    c.execute("postgres", &format!("CREATE DATABASE {name}"))
        .await;
    c.url(&name)
}

/// A new database of the cluster, reached at `port` on the loopback (a proxy in front of the
/// cluster): its URL.
pub async fn database_through(port: u16) -> String {
    let db = db_name(&database().await);
    format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}?sslmode=disable")
}

/// Write `s` to a new file in `dir` (e.g. a password file) and return its path.
pub fn write_file(dir: &Path, name: &str, s: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("creating a file");
    f.write_all(s.as_bytes()).expect("writing a file");
    p
}

/// The database name of a test database URL.
pub fn db_name(url: &str) -> String {
    url.rsplit('/')
        .next()
        .and_then(|s| s.split('?').next())
        .unwrap_or_default()
        .to_string()
}
