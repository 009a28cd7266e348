//! The `wharf` command: `serve`, `check-config`, `migrate`, `store copy`, `quota rescan`,
//! `--version`.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use wharf::config::{CONFIG_ENV, Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "Registry sidecar that turns traffic into webhooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy, the API and the webhook dispatcher.
    Serve {
        /// The YAML config file.
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// Validate the config and print the effective configuration (secrets masked). With
    /// `store.url` it also connects to PostgreSQL (unless `--no-connect`).
    CheckConfig {
        /// The YAML config file.
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
        /// Check the file only: do not try to reach the store's database.
        #[arg(long)]
        no_connect: bool,
    },
    /// Project quotas.
    Quota {
        #[command(subcommand)]
        command: QuotaCommand,
    },
    /// Bring the store's schema to this version and exit (also done at every start).
    Migrate {
        /// The YAML config file.
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
    /// The store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy the embedded store (SQLite in data_dir) into a PostgreSQL database: policies,
    /// settings, knowledge, quota usage, the event log and the undelivered outbox. Stop wharf
    /// first. Then set store.url to the target.
    Copy {
        /// The YAML config file (the one the embedded store runs with).
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
        /// The target: postgres://USER[:PASS]@HOST[:PORT]/DB[?sslmode=…].
        #[arg(long)]
        to: String,
        /// A file with the target's password (a mounted secret), instead of a password in
        /// --to. Wins over one in --to, as store.password_file does.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Empty a target that already holds data instead of refusing it.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Subcommand)]
enum QuotaCommand {
    /// Learn the usage of content already in the registry: walk the catalog (every tag of every
    /// repository) and record each manifest's blobs. Safe to run while wharf serves.
    Rescan {
        /// The YAML config file (the same one `serve` uses).
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
        /// Registry user, when the registry needs credentials to list and read.
        #[arg(long)]
        username: Option<String>,
        /// Read the registry password from standard input (with --username).
        #[arg(long, requires = "username")]
        password_stdin: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config, no_connect } => check_config(config, !no_connect),
        Command::Quota {
            command:
                QuotaCommand::Rescan {
                    config,
                    username,
                    password_stdin,
                },
        } => quota_rescan(config, username, password_stdin),
        Command::Migrate { config } => migrate(config),
        Command::Store {
            command:
                StoreCommand::Copy {
                    config,
                    to,
                    password_file,
                    replace,
                },
        } => store_copy(config, to, password_file, replace),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // the whole chain, each cause once (most errors here name their cause already)
            let e: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!("wharf: {}", wharf::error_chain(e));
            std::process::ExitCode::FAILURE
        }
    }
}

fn check_config(path: PathBuf, connect: bool) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    print!("{}", config.to_masked_yaml());
    if connect && let Some(url) = &config.store.url {
        let probed = runtime()?.block_on(wharf::store::Store::probe(&config.store));
        match probed {
            Ok(Some(v)) => eprintln!(
                "store.url: connected to {}, schema version {v} (this wharf writes {})",
                url.masked(),
                wharf::store::schema::latest()
            ),
            Ok(None) => eprintln!(
                "store.url: connected to {}, empty database (wharf creates its schema at start)",
                url.masked()
            ),
            Err(e) => anyhow::bail!("store.url ({}): {e}", url.masked()),
        }
    }
    eprintln!("config {} is valid", path.display());
    Ok(())
}

/// The runtime of the short commands (migrate, rescan, …): one worker per CPU.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(wharf::config::WorkerThreads::Auto.resolve())
}

/// A runtime of `workers` worker threads.
fn runtime_with(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn migrate(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let _log = init_logging(&config);
    runtime()?.block_on(async move {
        let key = match &config.store.url {
            Some(url) => format!("store.url ({})", url.masked()),
            None => format!("data_dir ({})", config.data_dir.display()),
        };
        let store = wharf::store::Store::open(&config.store, &config.data_dir)
            .await
            .with_context(|| key.clone())?;
        let version = store.schema_version().await.with_context(|| key.clone())?;
        store.close().await;
        println!(
            "{}: schema version {version} ({})",
            store.location(),
            store.backend().name()
        );
        anyhow::Ok(())
    })
}

/// `store copy`'s password file is `--password-file`, not the config's key: its read error
/// names the flag.
fn password_file_flag(e: wharf::store::StoreError) -> anyhow::Error {
    use wharf::config::ConfigError;
    use wharf::store::{StoreError, pg::PgSetupError};
    if let StoreError::Setup(setup) = &e
        && let PgSetupError::Password(ConfigError::SecretFile { path, source, .. }) = &**setup
    {
        return anyhow::anyhow!("--password-file: cannot read {}: {source}", path.display());
    }
    e.into()
}

fn store_copy(
    path: PathBuf,
    to: String,
    password_file: Option<PathBuf>,
    replace: bool,
) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let _log = init_logging(&config);
    if config.store.url.is_some() {
        anyhow::bail!(
            "store.url is set in {}: the source of a copy is the embedded store (remove store.url, or use a config without it)",
            path.display()
        );
    }
    let mut target = config.store.clone();
    let url = wharf::config::DatabaseUrl::new(to);
    url.parse()
        .map_err(|reason| anyhow::anyhow!("--to: {reason}"))?;
    target.url = Some(url.clone());
    // (a pipe or /dev/stdin will do: what it holds is read once, when connecting)
    if let Some(file) = &password_file
        && (!file.exists() || file.is_dir())
    {
        anyhow::bail!("--password-file: {} is not a readable file", file.display());
    }
    target.password_file = password_file;
    // one transaction of a whole store: no statement limit (see store.statement_timeout)
    target.statement_timeout = std::time::Duration::ZERO;
    runtime()?.block_on(async move {
        let from = wharf::store::Store::open(&config.store, &config.data_dir)
            .await
            .with_context(|| format!("data_dir ({})", config.data_dir.display()))?;
        let into = wharf::store::Store::open(&target, &config.data_dir)
            .await
            .map_err(password_file_flag)
            .with_context(|| format!("--to ({})", url.masked()))?;
        let report = wharf::store::copy::copy(&from, &into, replace).await;
        from.close().await;
        into.close().await;
        let report = report?;
        println!("copied {} into {}:", from.location(), url.masked());
        for (table, n) in report {
            println!("  {table}: {n}");
        }
        anyhow::Ok(())
    })
}

fn quota_rescan(
    path: PathBuf,
    username: Option<String>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    use base64::Engine as _;
    let mut config = Config::load(&path)?;
    // an operator's command over the whole store (the recount reads every manifest): no
    // statement limit (see store.statement_timeout)
    config.store.statement_timeout = std::time::Duration::ZERO;
    let _log = init_logging(&config);
    let authorization = match username {
        Some(user) => {
            let mut password = String::new();
            if password_stdin {
                std::io::stdin()
                    .read_line(&mut password)
                    .context("reading the password from standard input")?;
            }
            let token = base64::engine::general_purpose::STANDARD.encode(format!(
                "{user}:{}",
                password.trim_end_matches(['\r', '\n'])
            ));
            Some(http::HeaderValue::from_str(&format!("Basic {token}"))?)
        }
        None => None,
    };
    runtime()?.block_on(async move {
        let app = wharf::app::App::build(config, Default::default()).await?;
        let report = wharf::quota::rescan(app.quota(), authorization).await;
        app.store.close().await;
        let report = report?;
        println!(
            "scanned {} repositories, {} manifests ({} new to wharf)",
            report.repositories, report.manifests, report.newly_counted
        );
        for (project, usage) in &report.usage {
            let limit = app
                .config
                .projects
                .get(project)
                .and_then(|p| p.storage_limit)
                .map(|l| format!(" of {}", wharf::config::bytesize::human(l)))
                .unwrap_or_default();
            println!(
                "  {project}: {}{limit}",
                wharf::config::bytesize::human(*usage)
            );
        }
        anyhow::Ok(())
    })
}

/// Install the log subscriber; the returned output is flushed before the process ends.
fn init_logging(config: &Config) -> LogOutput {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // (bounded by validation: at most MAX_LOG_BUFFER)
    let capacity = usize::try_from(config.log.buffer).unwrap_or(usize::MAX);
    let mut output = Arc::new(wharf::logwriter::Output::new(std::io::stdout(), capacity));
    if capacity > 0
        && let Err(e) = output.flush_every(config.log.flush_interval)
    {
        // nothing would write held lines on time: hold none
        eprintln!("cannot start the log flushing thread ({e}): log.buffer is 0");
        output = Arc::new(wharf::logwriter::Output::new(std::io::stdout(), 0));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(wharf::logwriter::Shared(output.clone()));
    let access_log = match config.log.format {
        LogFormat::Json => {
            builder.json().flatten_event(true).init();
            // the same lines as that formatter's, written by wharf (see `accesslog`)
            wharf::accesslog::Sink::Json(output.clone())
        }
        LogFormat::Text => {
            builder.init();
            wharf::accesslog::Sink::Events
        }
    };
    LogOutput { output, access_log }
}

/// The log output, written out when dropped (the end of `serve`, also on an error), and where
/// the server writes access-log lines.
struct LogOutput {
    output: Arc<wharf::logwriter::Output<std::io::Stdout>>,
    access_log: wharf::accesslog::Sink,
}

impl Drop for LogOutput {
    fn drop(&mut self) {
        let _ = self.output.flush();
    }
}

fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let log = init_logging(&config);
    let access_log = log.access_log.clone();
    runtime_with(config.server.worker_threads.resolve())
        .context("server.worker_threads")?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listen: cannot bind {}", config.listen))?;
            let mut running = wharf::Running::start_with(config, listener, access_log).await?;
            tokio::select! {
                res = running.wait() => res?,
                () = shutdown_signal() => running.shutdown().await?,
            }
            tracing::info!("wharf stopped");
            anyhow::Ok(())
        })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
