//! PostgreSQL: the shared store of several replicas.
//!
//! Client: `tokio-postgres` (the maintained async driver) with TLS by rustls
//! (`tokio-postgres-rustls`), as the rest of wharf. Store functions are synchronous (they are
//! shared with the embedded SQLite backend), so a job runs on a writer thread (reads: a
//! blocking thread) and waits for each statement (`Driver`): a reader's connection runs as a
//! task on wharf's runtime, a writer's on a single-threaded runtime of the writer thread (as
//! the synchronous `postgres` crate drives its clients), so the thread does its own socket I/O
//! instead of waking a runtime worker and being woken by it on every round trip. Statements are
//! prepared once per connection and cached.
//!
//! Pipelining: a statement whose answer the job does not look at (an insert, `BEGIN`,
//! `SAVEPOINT`) is *sent* at once and not waited for ([`PgConn::execute_later`],
//! [`PgConn::batch_later`]); the next statement that is waited for — a query, or `COMMIT` —
//! travels behind it and waits for every answer in order. A transaction is then a few round
//! trips instead of one per statement. The error of a statement sent ahead is the error of the
//! next wait, and fails the job as its own error would (the transaction, or the job's
//! savepoint, is rolled back). A durable job alone in its transaction begins it lazily
//! ([`PgConn::begin_lazily`]): when it sends one statement and waits for nothing (a push, whose
//! learning its event's insert carries: [`super::db::Db::carry`]), that statement goes alone,
//! in autocommit, without `BEGIN` and `COMMIT`.
//!
//! The pool is bounded (`store.pool_size`, one connection kept for the schema-version watch)
//! and waits at most `store.connect_timeout` for a free connection or a new one. A connection
//! that failed is dropped, never reused: when the server comes back, the next job simply
//! connects again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::StoreError;
use super::db::{OwnedValue, Value, to_postgres};
use crate::config::{PgTarget, SslMode, StoreConfig};

/// How a message names the CA file of `store.url` (its `sslrootcert` parameter).
pub const SSLROOTCERT_KEY: &str = "store.url (sslrootcert)";

/// Errors preparing the connection settings.
#[derive(Debug, thiserror::Error)]
pub enum PgSetupError {
    #[error(transparent)]
    Password(crate::config::ConfigError),
    #[error(transparent)]
    RootCert(#[from] crate::pem::PemError),
    #[error("store.url: TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("store.url: TLS: {0}")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    #[error("store.url: {0}")]
    Url(String),
}

/// How to reach the database (from `store.url` and `store.password_file`).
#[derive(Clone)]
pub struct PgSettings {
    config: tokio_postgres::Config,
    /// Longest wait for any answer on a connection (`store.statement_timeout` +
    /// `store.connect_timeout`; `None`: no limit). Past it the connection is dropped.
    answer_timeout: Option<Duration>,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// `host:port/db` for messages (never the password).
    pub display: String,
}

impl PgSettings {
    pub fn from_config(store: &StoreConfig) -> Result<PgSettings, PgSetupError> {
        let url = store
            .url
            .as_ref()
            .ok_or_else(|| PgSetupError::Url("not set".into()))?;
        let target = url.parse().map_err(PgSetupError::Url)?;
        let password = store
            .password()
            .map_err(PgSetupError::Password)?
            .map(|s| s.expose().to_string());
        Self::new(
            &target,
            password,
            store.connect_timeout,
            store.statement_timeout,
        )
    }

    fn new(
        t: &PgTarget,
        password: Option<String>,
        connect_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<PgSettings, PgSetupError> {
        let mut config = tokio_postgres::Config::new();
        config
            .user(&t.user)
            .host(&t.host)
            .port(t.port)
            .dbname(&t.dbname)
            .application_name(t.application_name.as_deref().unwrap_or("wharf"))
            .connect_timeout(t.connect_timeout.unwrap_or(connect_timeout))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if let Some(p) = password {
            config.password(p);
        }
        let connect_timeout = t.connect_timeout.unwrap_or(connect_timeout);
        let answer_timeout = (!statement_timeout.is_zero()).then(|| {
            // a statement stuck on a lock fails on the server (SQLSTATE 57014); a server or a
            // network that stopped answering altogether is given up on by `answer_timeout`
            config.options(format!(
                "-c statement_timeout={}",
                statement_timeout.as_millis()
            ));
            statement_timeout.saturating_add(connect_timeout)
        });
        config.ssl_mode(match t.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = match t.sslmode {
            SslMode::Disable => None,
            mode => Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
                mode,
                t.sslrootcert.as_deref(),
            )?)),
        };
        Ok(PgSettings {
            config,
            answer_timeout,
            tls,
            display: format!("{}:{}/{}", t.host, t.port, t.dbname),
        })
    }

    /// Open one connection; its I/O runs as a task on the current runtime (the handle ends
    /// that task, and with it the socket).
    pub async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::AbortHandle), StoreError> {
        let connected = match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                (client, tokio::spawn(drive(connection)).abort_handle())
            }
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                (client, tokio::spawn(drive(connection)).abort_handle())
            }
        };
        Ok(connected)
    }
}

async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "postgres connection ended");
    }
}

/// rustls settings for `sslmode`: `prefer`/`require` encrypt without checking the
/// certificate (libpq's meaning), `verify-ca` checks the chain against `sslrootcert` (else the
/// system roots), `verify-full` also the host name. `require` with an `sslrootcert` is
/// `verify-ca`, as libpq does when a root CA file is given.
fn tls_config(
    mode: SslMode,
    root_cert: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, PgSetupError> {
    let provider = crate::pem::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(PgSetupError::Tls)?;
    let roots = || -> Result<Arc<rustls::RootCertStore>, PgSetupError> {
        let mut store = rustls::RootCertStore::empty();
        match root_cert {
            Some(path) => crate::pem::add_roots(&mut store, SSLROOTCERT_KEY, path)?,
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = store.add(c);
                }
            }
        }
        Ok(Arc::new(store))
    };
    let mode = match (mode, root_cert) {
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    Ok(match mode {
        SslMode::VerifyFull => builder
            .with_root_certificates(roots()?)
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots()?,
                provider.clone(),
            )
            .build()
            .map_err(PgSetupError::Verifier)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::dispatch::client::NoVerify(provider)))
            .with_no_client_auth(),
    })
}

/// `verify-ca`: the chain must lead to a trusted root; the name in the certificate is not
/// checked (libpq's meaning).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A statement sent ahead: its answer is awaited at the next wait (see the module doc).
type Sent = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send>>;

/// What a connection's statements are waited for on.
#[derive(Clone)]
enum Driver {
    /// The process's runtime, whose workers drive the connection's socket (readers, on
    /// blocking threads).
    Shared(tokio::runtime::Handle),
    /// A writer thread's own single-threaded runtime: the writer writes the statements, waits
    /// for the socket and reads the answers itself, instead of handing each round trip to a
    /// runtime worker and being woken by it (two thread wake-ups per round trip, each a wait
    /// for a core on a busy host).
    Own(Arc<tokio::runtime::Runtime>),
}

impl Driver {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match self {
            Driver::Shared(h) => h.block_on(f),
            Driver::Own(rt) => rt.block_on(f),
        }
    }
}

/// One connection, used synchronously from a writer or blocking thread (see the module doc).
pub struct PgConn {
    client: Arc<tokio_postgres::Client>,
    handle: Driver,
    statements: RefCell<HashMap<String, tokio_postgres::Statement>>,
    /// Statements sent, answers not yet read (in the order sent). While `lazy_begin` holds a
    /// `BEGIN`, its one statement is held here unsent (not polled yet).
    sent: RefCell<Vec<Sent>>,
    /// A transaction's `BEGIN` not sent yet ([`PgConn::begin_lazily`]).
    lazy_begin: std::cell::Cell<Option<&'static str>>,
    broken: std::cell::Cell<bool>,
    /// See [`PgSettings`]'s `answer_timeout`.
    answer_timeout: std::cell::Cell<Option<Duration>>,
    /// Set when an answer did not come within `answer_timeout`: every later wait fails at
    /// once (a rollback too: the server is not answering), and dropping the connection ends
    /// its task and socket rather than wait for the answers still owed.
    gave_up: std::cell::Cell<Option<Duration>>,
    /// The connection's I/O task.
    task: tokio::task::AbortHandle,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if self.gave_up.get().is_some() {
            self.task.abort();
        }
    }
}

/// Most statements kept prepared per connection.
const MAX_STATEMENTS: usize = 256;

impl PgConn {
    fn new(
        (client, task): (tokio_postgres::Client, tokio::task::AbortHandle),
        handle: Driver,
        answer_timeout: Option<Duration>,
    ) -> PgConn {
        PgConn {
            client: Arc::new(client),
            handle,
            statements: RefCell::new(HashMap::new()),
            sent: RefCell::new(Vec::new()),
            lazy_begin: std::cell::Cell::new(None),
            broken: std::cell::Cell::new(false),
            answer_timeout: std::cell::Cell::new(answer_timeout),
            gave_up: std::cell::Cell::new(None),
            task,
        }
    }

    /// Wait for `f`, at most the answer timeout: past it the connection is given up (never
    /// handed out again, every later wait fails at once, its socket closed when dropped).
    fn block_on<T>(&self, f: impl Future<Output = T>) -> Result<T, StoreError> {
        if let Some(limit) = self.gave_up.get() {
            return Err(StoreError::NoAnswer(limit));
        }
        match self.answer_timeout.get() {
            None => Ok(self.handle.block_on(f)),
            // (the timer is made inside: it needs the runtime's context)
            Some(limit) => match self
                .handle
                .block_on(async { tokio::time::timeout(limit, f).await })
            {
                Ok(v) => Ok(v),
                Err(_) => {
                    self.broken.set(true);
                    self.gave_up.set(Some(limit));
                    Err(StoreError::NoAnswer(limit))
                }
            },
        }
    }

    /// Lift `store.statement_timeout` for the rest of this connection's life (schema
    /// migrations: an index built on a large table may take minutes) and retire it: it is
    /// closed when dropped, never pooled with the limit lifted.
    pub fn unbounded(&self) -> Result<(), StoreError> {
        self.batch("SET statement_timeout = 0")?;
        self.answer_timeout.set(None);
        self.broken.set(true);
        Ok(())
    }

    /// Send `request` now (its first poll writes it to the connection's queue) and keep it
    /// for the next wait — or, as a transaction's first statement after
    /// [`PgConn::begin_lazily`], keep it unsent until the transaction needs its `BEGIN`.
    fn send(&self, mut request: Sent) {
        if self.lazy_begin.get().is_some() {
            if self.sent.borrow().is_empty() {
                self.sent.borrow_mut().push(request);
                return;
            }
            self.open_transaction();
        }
        let mut cx = Context::from_waker(Waker::noop());
        let request = match request.as_mut().poll(&mut cx) {
            Poll::Pending => request,
            // could not even be sent (the connection is closed): the next wait reports it
            Poll::Ready(r) => Box::pin(std::future::ready(r)),
        };
        self.sent.borrow_mut().push(request);
    }

    /// A transaction begun lazily needs its `BEGIN` now (a second statement, or a wait):
    /// send it, then the statement held.
    fn open_transaction(&self) {
        if let Some(begin) = self.lazy_begin.take() {
            let held = std::mem::take(&mut *self.sent.borrow_mut());
            self.batch_later(begin);
            for request in held {
                self.send(request);
            }
        }
    }

    /// Begin a transaction with `begin` (`BEGIN`, its default `synchronous_commit`) lazily:
    /// one whose job sends a single statement and waits for nothing sends that statement
    /// alone at [`PgConn::commit`], in autocommit: it is then its own transaction, committed
    /// by the server as it ends, and the `BEGIN` and `COMMIT` messages (two more for the server
    /// to read, run and answer, a push's most frequent case) are never sent. A second
    /// statement, or any wait, sends the `BEGIN` first, then the statement held.
    pub fn begin_lazily(&self, begin: &'static str) {
        self.open_transaction();
        self.lazy_begin.set(Some(begin));
    }

    /// Commit the transaction: `COMMIT`, or, when it was begun lazily and never opened,
    /// its one statement (if any) sent alone and waited for.
    pub fn commit(&self) -> Result<(), StoreError> {
        if self.lazy_begin.take().is_some() {
            return self.settle();
        }
        self.batch("COMMIT")
    }

    /// Wait for `request` and for every statement sent before it, all polled together (the
    /// connection hands answers out in order, and stalls on one nobody reads). The first
    /// error among them, unless `discard` (a rollback: earlier errors no longer matter).
    fn wait<T>(
        &self,
        request: impl Future<Output = Result<T, tokio_postgres::Error>>,
        discard: bool,
    ) -> Result<T, StoreError> {
        self.open_transaction();
        let sent = std::mem::take(&mut *self.sent.borrow_mut());
        if sent.is_empty() {
            let r = self.block_on(request)?;
            return self.check(r);
        }
        let (earlier, r) = self.block_on(futures_util::future::join(
            futures_util::future::join_all(sent),
            request,
        ))?;
        for e in earlier {
            let e = self.check(e);
            if !discard {
                e?;
            }
        }
        self.check(r)
    }

    /// Wait for every statement sent ahead; the first error among them.
    pub fn settle(&self) -> Result<(), StoreError> {
        self.wait(std::future::ready(Ok(())), false)
    }

    /// Send a statement whose answer the caller does not need; see the module doc.
    pub fn execute_later(&self, sql: &str, args: &[Value<'_>]) -> Result<(), StoreError> {
        self.send_statement(sql, args, |client, st, owned| async move {
            let values: Vec<Value<'_>> = owned.iter().map(OwnedValue::value).collect();
            client.execute(&st, &Self::params(&values)).await
        })
    }

    /// Send a statement that returns one row with an id in its first column (`INSERT …
    /// RETURNING id`) without waiting; `id` is set when its answer is read (the next wait).
    pub fn query_id_later(
        &self,
        sql: &str,
        args: &[Value<'_>],
        id: super::db::LaterId,
    ) -> Result<(), StoreError> {
        self.send_statement(sql, args, |client, st, owned| async move {
            let values: Vec<Value<'_>> = owned.iter().map(OwnedValue::value).collect();
            let row = client.query_one(&st, &Self::params(&values)).await?;
            id.set(row.try_get::<_, i64>(0)?);
            Ok(1)
        })
    }

    /// Prepare `sql` (waiting, once per connection) and send `run` of it now, with `args`
    /// owned (the statement outlives the job's borrowed arguments); its answer is read at the
    /// next wait.
    fn send_statement<F, Fut>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        run: F,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(Arc<tokio_postgres::Client>, tokio_postgres::Statement, Vec<OwnedValue>) -> Fut,
        Fut: Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'static,
    {
        let st = self.statement(sql)?;
        let owned: Vec<OwnedValue> = args.iter().map(OwnedValue::of).collect();
        self.send(Box::pin(run(self.client.clone(), st, owned)));
        Ok(())
    }

    /// Send statements without parameters (`BEGIN`, `SAVEPOINT`) without waiting.
    pub fn batch_later(&self, sql: &'static str) {
        let client = self.client.clone();
        self.send(Box::pin(async move {
            client.batch_execute(sql).await.map(|()| 0)
        }));
    }

    fn check<T>(&self, r: Result<T, tokio_postgres::Error>) -> Result<T, StoreError> {
        if let Err(e) = &r
            && (e.is_closed() || e.code().is_none())
        {
            // the connection (not the statement) failed: never hand it out again
            self.broken.set(true);
        }
        Ok(r?)
    }

    fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let text = to_postgres(sql);
        let prepare = self.client.prepare(&text);
        let st = if self.lazy_begin.get().is_some() && self.sent.borrow().is_empty() {
            // a transaction begun lazily's first statement: preparing needs no transaction
            let r = self.block_on(prepare)?;
            self.check(r)?
        } else {
            self.wait(prepare, false)?
        };
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= MAX_STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    fn params<'v>(args: &'v [Value<'v>]) -> Vec<&'v (dyn tokio_postgres::types::ToSql + Sync)> {
        args.iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect()
    }

    pub fn execute(&self, sql: &str, args: &[Value<'_>]) -> Result<u64, StoreError> {
        let st = self.statement(sql)?;
        self.wait(self.client.execute(&st, &Self::params(args)), false)
    }

    pub fn query(
        &self,
        sql: &str,
        args: &[Value<'_>],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let st = self.statement(sql)?;
        self.wait(self.client.query(&st, &Self::params(args)), false)
    }

    /// Statements without parameters, in one round trip (transaction control, DDL).
    pub fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.wait(self.client.batch_execute(sql), false)
    }

    /// A rollback (`ROLLBACK`, `ROLLBACK TO SAVEPOINT …`): waits for what was sent ahead, whose
    /// errors it makes moot.
    pub fn rollback(&self, sql: &str) -> Result<(), StoreError> {
        if self.lazy_begin.take().is_some() {
            // never opened: its statement (if any) was never sent (a transaction begun lazily
            // has one job, and no savepoint to roll back to)
            debug_assert_eq!(sql, "ROLLBACK");
            self.sent.borrow_mut().clear();
            return Ok(());
        }
        self.wait(self.client.batch_execute(sql), true)
    }

    /// A writer's own connection, before a batch: the connection's task only runs while the
    /// writer waits on it, so a connection the server (or the network) closed while it sat idle
    /// would only find out with the batch's first statements, failing them. Let the task look
    /// at its socket first (two turns of the runtime: one to poll the socket, one to run the
    /// task it wakes); then [`PgConn::usable`] knows.
    pub fn refresh(&self) {
        if let Driver::Own(rt) = &self.handle {
            rt.block_on(async {
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
            });
        }
    }

    /// Fit to hand out again: not failed, and no statement sent ahead left unread (a job
    /// that ended half-way; closing the connection rolls its transaction back).
    pub fn usable(&self) -> bool {
        !self.broken.get()
            && !self.client.is_closed()
            && self.sent.borrow().is_empty()
            && self.lazy_begin.get().is_none()
    }
}

/// The connection pool.
pub struct Pg {
    settings: PgSettings,
    idle: Mutex<Vec<PgConn>>,
    permits: Arc<Semaphore>,
    wait: Duration,
    handle: tokio::runtime::Handle,
}

/// A connection taken from the pool; back into it when dropped (unless it failed).
pub struct Pooled {
    conn: Option<PgConn>,
    pool: Arc<Pg>,
    _permit: OwnedSemaphorePermit,
    /// A writer's own connection ([`Pg::acquire_own`]): closed when dropped.
    own: bool,
}

impl std::ops::Deref for Pooled {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        match &self.conn {
            Some(c) => c,
            None => unreachable!("a pooled connection is only taken out when dropped"),
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take()
            && !self.own
            && c.usable()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(c);
        }
    }
}

impl Pg {
    /// A pool of at most `size` connections (none opened yet).
    pub fn new(settings: PgSettings, size: usize, wait: Duration) -> Arc<Pg> {
        Arc::new(Pg {
            settings,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
            wait,
            handle: tokio::runtime::Handle::current(),
        })
    }

    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }

    /// A connection: an idle one, or a new one; waits at most `store.connect_timeout`.
    pub async fn acquire(self: &Arc<Self>) -> Result<Pooled, StoreError> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| StoreError::PoolTimeout(self.wait))?
            .map_err(|_| StoreError::Closed)?;
        let idle = loop {
            let next = self.idle.lock().ok().and_then(|mut v| v.pop());
            match next {
                Some(c) if c.usable() => break Some(c),
                Some(_) => continue,
                None => break None,
            }
        };
        let conn = match idle {
            Some(c) => c,
            None => {
                let client = tokio::time::timeout(self.wait, self.settings.connect())
                    .await
                    .map_err(|_| StoreError::PoolTimeout(self.wait))??;
                PgConn::new(
                    client,
                    Driver::Shared(self.handle.clone()),
                    self.settings.answer_timeout,
                )
            }
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
            own: false,
        })
    }

    /// A connection of its own for a writer thread, driven by the thread's runtime `rt` (see
    /// `Driver::Own`): a new one, counted against the pool's size, never shared (it closes
    /// when dropped). Waits at most `store.connect_timeout`.
    pub fn acquire_own(
        self: &Arc<Self>,
        rt: &Arc<tokio::runtime::Runtime>,
    ) -> Result<Pooled, StoreError> {
        let (permit, client) = rt.block_on(async {
            let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| StoreError::PoolTimeout(self.wait))?
                .map_err(|_| StoreError::Closed)?;
            // the connection's task is spawned on `rt`, and runs while the writer waits on it
            let client = tokio::time::timeout(self.wait, self.settings.connect())
                .await
                .map_err(|_| StoreError::PoolTimeout(self.wait))??;
            Ok::<_, StoreError>((permit, client))
        })?;
        Ok(Pooled {
            conn: Some(PgConn::new(
                client,
                Driver::Own(rt.clone()),
                self.settings.answer_timeout,
            )),
            pool: self.clone(),
            _permit: permit,
            own: true,
        })
    }

    /// Close idle connections and refuse new ones.
    pub fn close(&self) {
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}
