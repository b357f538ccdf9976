//! Test bed for end-to-end tests: a throwaway directory with a dev PKI made
//! by `liandong-certs` (the dev registry of `deploy/dev/agencies.toml`), a
//! database, and the real `liandong-gateway` binary running as a child
//! process on a loopback port. Clients connect over real mutual TLS.
//!
//! The database is SQLite in the test bed's directory unless
//! `LIANDONG_TEST_BACKEND=postgres`: then every test bed gets a fresh
//! PostgreSQL database of its own on the server at
//! `LIANDONG_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped with the test bed.
//! Tests stay the same on both; direct reads go through
//! [`Testbed::connect_database`] with portable SQL. A test that can only
//! run on SQLite says so with [`skip_unless_sqlite`].
//!
//! Nothing here fakes the gateway: tests drive the same binary operators
//! run. The child is killed when the test bed is dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use liandong_certs::{Authority, CertifiedKey};
use liandong_core::pb;
use liandong_core::pb::exchange_client::ExchangeClient;
use liandong_core::tls::ClientCredentials;
pub mod adapter_bed;
pub mod demo_adapters;
pub mod demo_story;
pub mod faults;
pub mod hostile;
pub mod limits_bed;
pub mod signed;
pub mod tls_bed;

/// The dev registry: the agencies of the Changzhi mechanism.
pub const REGISTRY: &str = include_str!("../../deploy/dev/agencies.toml");

/// Chooses the backend of every test bed: `sqlite` (the default) or
/// `postgres`.
pub const BACKEND_VAR: &str = "LIANDONG_TEST_BACKEND";

/// The PostgreSQL server test beds make their databases on.
pub const POSTGRES_URL_VAR: &str = "LIANDONG_TEST_POSTGRES_URL";

/// The PostgreSQL server used when [`POSTGRES_URL_VAR`] is not set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The prefix of the databases test beds make (`ld_bed_<unix
/// seconds>_<process>_<counter>`); `scripts/test` drops old ones a crashed
/// run left behind.
pub const POSTGRES_DATABASE_PREFIX: &str = "ld_bed_";

/// The database backend a gateway runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test bed's directory.
    Sqlite,
    /// A PostgreSQL database of the test bed's own.
    Postgres,
}

impl Backend {
    /// The backend chosen by `LIANDONG_TEST_BACKEND`; panics on a value
    /// that names neither, so a typo cannot silently test SQLite twice.
    pub fn from_env() -> Self {
        match std::env::var(BACKEND_VAR).as_deref() {
            Err(_) | Ok("" | "sqlite") => Self::Sqlite,
            Ok("postgres" | "postgresql") => Self::Postgres,
            Ok(other) => panic!("{BACKEND_VAR}={other:?}: expected \"sqlite\" or \"postgres\""),
        }
    }

    /// The backend a database URL names.
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// For a test that can only run on SQLite (it edits the file, or uses a
/// SQLite-only fault): on PostgreSQL prints that it is skipped and why
/// (visible in `cargo test`'s output, not captured), and returns true; the
/// test then returns at once:
/// `if skip_unless_sqlite("needs PRAGMA max_page_count") { return; }`.
pub fn skip_unless_sqlite(why: &str) -> bool {
    if Backend::from_env() == Backend::Sqlite {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    // Written to the handle itself, not with `eprintln!`, which the test
    // harness captures and shows only for failures: a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED on PostgreSQL: {test}: {why}");
    true
}

/// For a test of what only PostgreSQL offers (several gateway replicas on
/// one database): on SQLite prints that it is skipped and why (visible,
/// not captured), and returns true; the test then returns at once.
pub fn skip_unless_postgres(why: &str) -> bool {
    if Backend::from_env() == Backend::Postgres {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED on SQLite: {test}: {why} (runs with {BACKEND_VAR}=postgres)"
    );
    true
}

/// Runs `future` to completion on a runtime of its own in another thread,
/// so synchronous code (constructors, `Drop`) can use async clients even
/// when called from inside a test's runtime.
fn run_apart<T: Send>(future: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for database set-up")
                    .block_on(future)
            })
            .join()
            .expect("database set-up does not panic")
    })
}

/// A PostgreSQL database made for one test bed (or one test) and dropped
/// with it.
pub struct PostgresDatabase {
    /// The server's URL (any database on it), used to create and drop.
    server_url: String,
    /// The database's name.
    name: String,
    /// The URL of the database itself.
    pub url: String,
}

impl PostgresDatabase {
    /// Creates a fresh, empty database on the server at
    /// `LIANDONG_TEST_POSTGRES_URL`.
    pub fn create() -> anyhow::Result<Self> {
        use sqlx::Connection;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let server_url =
            std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{POSTGRES_DATABASE_PREFIX}{}_{}_{}",
            since_epoch.as_secs(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run_apart(async {
            let mut conn = sqlx::PgConnection::connect(&server_url)
                .await
                .with_context(|| {
                    format!(
                        "{BACKEND_VAR}=postgres but PostgreSQL at {server_url} \
                         ({POSTGRES_URL_VAR}) is not reachable"
                    )
                })?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .with_context(|| format!("creating database {name}"))?;
            conn.close().await?;
            anyhow::Ok(())
        })?;
        let url = with_database(&server_url, &name)?;
        Ok(Self {
            server_url,
            name,
            url,
        })
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        use sqlx::Connection;
        let dropped = run_apart(async {
            let mut conn = sqlx::PgConnection::connect(&self.server_url).await?;
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await?;
            conn.close().await
        });
        if let Err(error) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// `server_url` with its database replaced by `name` (query kept).
fn with_database(server_url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let authority_at = base
        .find("://")
        .with_context(|| format!("{POSTGRES_URL_VAR} is not a URL: {server_url}"))?
        + 3;
    let host_end = base[authority_at..]
        .find('/')
        .map_or(base.len(), |at| authority_at + at);
    let mut url = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// The workspace's programs that tests run as processes.
pub const PROGRAMS: [&str; 3] = ["liandong-gateway", "liandong-adapter", "liandong-certs"];

/// Path of one of the workspace's [`PROGRAMS`]; the first call in a test
/// process builds all of them. A failed build is tried once: every test
/// that needs a program then fails with that build's errors.
pub fn binary(program: &str) -> PathBuf {
    static BUILT: OnceLock<Result<Vec<(String, PathBuf)>, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        build_programs().map_err(|e| format!("building {}: {e:#}", PROGRAMS.join(", ")))
    });
    let built = built.as_ref().unwrap_or_else(|e| panic!("{e}"));
    built
        .iter()
        .find(|(name, _)| name == program)
        .map(|(_, path)| path.clone())
        .unwrap_or_else(|| panic!("{program} is not one of the workspace's programs {PROGRAMS:?}"))
}

/// Builds the [`PROGRAMS`] in one `cargo build --workspace`: features are
/// then resolved across the whole workspace, so the three programs share
/// one build of their dependencies, the same build `scripts/test` makes
/// before the tests start (a `-p` build per program would compile most
/// dependencies again, once for each). A failed build is reported with
/// what the compiler said, not only cargo's last line.
fn build_programs() -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut build = escargot::CargoBuild::new()
        .current_release()
        .arg("--workspace");
    for program in PROGRAMS {
        build = build.bin(program);
    }
    // Under `cargo test`/`cargo run` these describe the calling package;
    // inherited by the nested build, they make build scripts that watch
    // them (ring's) rerun every time.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_BIN_")
        {
            build = build.env_remove(key);
        }
    }
    let mut built = Vec::new();
    let mut diagnostics = String::new();
    for message in build.exec()? {
        let message = match message {
            Ok(message) => message,
            Err(e) => bail!("{e}\n{diagnostics}"),
        };
        match message.decode()? {
            escargot::format::Message::CompilerArtifact(artifact) => {
                if let Some(executable) = artifact.executable
                    && PROGRAMS.contains(&artifact.target.name.as_ref())
                {
                    built.push((artifact.target.name.into_owned(), executable.into_owned()));
                }
            }
            escargot::format::Message::CompilerMessage(from) => {
                if let Some(rendered) = from.message.rendered {
                    diagnostics.push_str(&rendered);
                }
            }
            _ => {}
        }
    }
    for program in PROGRAMS {
        if !built.iter().any(|(name, _)| name == program) {
            bail!("cargo reported no executable for {program}\n{diagnostics}");
        }
    }
    Ok(built)
}

/// A development PKI in a directory, plus the CA to make more certificates.
pub struct Pki {
    /// Where `ca.crt`, `gateway.*` and `agencies/*` live.
    pub dir: PathBuf,
    /// The CA, for certificates tests make on the spot.
    pub authority: Authority,
}

impl Pki {
    /// Writes the registry and a full PKI for it under `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let registry = dir.join("agencies.toml");
        std::fs::write(&registry, REGISTRY)?;
        let pki = dir.join("pki");
        liandong_certs::init(&registry, &pki, false)?;
        let authority = Authority::from_pem(
            &std::fs::read_to_string(pki.join("ca.crt"))?,
            &std::fs::read_to_string(pki.join("ca.key"))?,
        )?;
        Ok(Self {
            dir: pki,
            authority,
        })
    }

    /// Registers every agency's Ed25519 public key (written by `init`) in
    /// the registry beside the PKI, so the gateway requires and checks
    /// their signatures.
    pub fn register_signing_keys(&self) -> anyhow::Result<()> {
        let registry = self
            .dir
            .parent()
            .context("the PKI has a parent directory")?
            .join("agencies.toml");
        let mut text = std::fs::read_to_string(&registry)?;
        for id in liandong_certs::read_agency_ids(&registry)? {
            let key = std::fs::read_to_string(
                self.dir.join("agencies").join(format!("{id}.signing.pub")),
            )?;
            let entry = format!("id = \"{id}\"\n");
            anyhow::ensure!(text.contains(&entry), "the registry has no line {entry:?}");
            text = text.replacen(
                &entry,
                &format!("{entry}signing_public_key = \"{}\"\n", key.trim()),
                1,
            );
        }
        std::fs::write(&registry, text)?;
        Ok(())
    }

    /// The gateway's own Ed25519 public key, as `init` wrote it beside its
    /// signing key (`gateway.signing.pub`, lower-case hex): what receivers
    /// verify the gateway's supervision alerts with.
    pub fn gateway_public_key(&self) -> anyhow::Result<[u8; 32]> {
        let path = self.dir.join("gateway.signing.pub");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let text = text.trim();
        anyhow::ensure!(
            text.len() == 64 && text.is_ascii(),
            "{}: not 64 hex digits",
            path.display()
        );
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .with_context(|| format!("{}: not hex", path.display()))?;
        }
        Ok(key)
    }

    /// Revokes the certificate `init` wrote for `agency`: adds it to the
    /// CA's revocation list (`ca.crl`) as `liandong-certs revoke` does. The
    /// gateway applies it on its next reload.
    pub fn revoke(&self, agency: &str) -> anyhow::Result<()> {
        liandong_certs::revoke(&self.dir, agency, None, liandong_certs::DEFAULT_CRL_DAYS)?;
        Ok(())
    }

    /// The credentials `init` wrote for a registered agency.
    pub fn credentials(&self, agency: &str) -> ClientCredentials {
        let agencies = self.dir.join("agencies");
        ClientCredentials::from_files(
            &self.dir.join("ca.crt"),
            &agencies.join(format!("{agency}.crt")),
            &agencies.join(format!("{agency}.key")),
        )
        .expect("init wrote the agency's credentials")
    }

    /// Credentials made of any certificate (trusting this PKI's CA).
    pub fn credentials_with(&self, certified: &CertifiedKey) -> ClientCredentials {
        ClientCredentials {
            ca_pem: self.authority.cert_pem(),
            cert_pem: certified.cert_pem.clone(),
            key_pem: certified.key_pem.clone(),
        }
    }
}

/// A `liandong-gateway serve` child process.
pub struct GatewayProcess {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its ops HTTP port (status page, metrics, health) listens
    /// (`LIANDONG_OPS_LISTEN=127.0.0.1:0` unless the config turns it off).
    pub ops_addr: Option<SocketAddr>,
}

impl GatewayProcess {
    /// Starts the gateway with `config` and waits until it listens.
    /// Its stderr goes to `log`.
    pub fn start(config: &Path, log: &Path) -> anyhow::Result<Self> {
        Self::start_with(config, log, &[], &[])
    }

    /// Like [`start`](Self::start), with `args` added to `serve`'s command
    /// line (e.g. `--log-format json`) and `env` applied last: a value
    /// sets a variable, `None` removes it (e.g. the `NO_COLOR` the bed
    /// sets by default).
    pub fn start_with(
        config: &Path,
        log: &Path,
        args: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> anyhow::Result<Self> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(binary("liandong-gateway"));
        command
            .arg("serve")
            .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("LIANDONG_LOG", "info,liandong_gateway=debug")
            .env("NO_COLOR", "1");
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("spawning liandong-gateway")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut ops = None;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                // The ops line, when there is one, comes first.
                if let Some(addr) = line.strip_prefix("liandong-gateway ops on http://") {
                    ops = Some(addr.to_owned());
                }
                if let Some(addr) = line.strip_prefix("liandong-gateway listening on https://") {
                    let _ = tx.send((addr.to_owned(), ops.take()));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((addr, ops)) => Ok(Self {
                child: Some(child),
                addr: addr.parse()?,
                ops_addr: ops.map(|ops| ops.parse()).transpose()?,
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                bail!(
                    "gateway did not start ({status}); log: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            }
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT` of the ops HTTP port; panics when it is off.
    pub fn ops_url(&self) -> String {
        format!(
            "http://{}",
            self.ops_addr.expect("the gateway's ops port is on")
        )
    }

    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends a signal (SIGTERM, SIGKILL, …).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .expect("signal the gateway");
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("already reaped")?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("gateway still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `[limits]` a test bed gets when its test sets none: a publish rate
/// no test reaches.
pub const UNLIMITED_PUBLISH_RATE: &str =
    "\n[limits]\npublish_per_second = 1000000\npublish_burst = 1000000\n";

/// The subscription lease of every test bed's gateway
/// (`[delivery] subscription_lease_seconds`): short, so that a subscriber
/// reconnecting after a gateway on PostgreSQL was killed waits little for
/// the dead process's lease to expire.
pub const TEST_LEASE_SECONDS: u64 = 3;

/// The gateway's TLS handshake timeout in a test bed unless a test sets
/// another.
const DEFAULT_HANDSHAKE_TIMEOUT_SECONDS: u64 = 2;

/// A directory with a PKI, a config and a running gateway.
pub struct Testbed {
    /// The throwaway directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// Its PKI.
    pub pki: Pki,
    /// The gateway's config file.
    pub config: PathBuf,
    /// The running gateway.
    pub gateway: GatewayProcess,
    /// The database URL the gateway uses, as a client outside the test
    /// bed's directory reaches it.
    database_url: String,
    /// The PostgreSQL database made for this test bed, dropped after the
    /// gateway (fields drop in order).
    _postgres: Option<PostgresDatabase>,
}

impl Testbed {
    /// A fresh test bed with the default configuration, on the backend
    /// `LIANDONG_TEST_BACKEND` chooses.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with("")
    }

    /// A fresh test bed on the backend `LIANDONG_TEST_BACKEND` chooses;
    /// `extra` is appended to the generated config (extra TOML tables such
    /// as `[limits]`). Without a `[limits]` table in `extra`, the test bed
    /// lifts the per-agency publish rate ([`UNLIMITED_PUBLISH_RATE`]), so
    /// that only tests that set `[limits]` meet the production default;
    /// without a `[delivery]` table it gets a poll of 200 ms and a lease
    /// of [`TEST_LEASE_SECONDS`].
    pub fn start_with(extra: &str) -> anyhow::Result<Self> {
        Self::start_with_handshake_timeout(DEFAULT_HANDSHAKE_TIMEOUT_SECONDS, extra)
    }

    /// A fresh test bed on the given database URL (SQLite paths relative to
    /// the test bed's directory, or a PostgreSQL URL the caller owns),
    /// whatever `LIANDONG_TEST_BACKEND` says.
    pub fn start_on(database_url: &str, extra: &str) -> anyhow::Result<Self> {
        Self::start_configured(database_url, DEFAULT_HANDSHAKE_TIMEOUT_SECONDS, extra)
    }

    /// Like [`start_with`](Self::start_with), with the gateway's TLS
    /// handshake timeout (`[tls] handshake_timeout_seconds`, otherwise 2)
    /// set to `seconds`.
    pub fn start_with_handshake_timeout(seconds: u64, extra: &str) -> anyhow::Result<Self> {
        match Backend::from_env() {
            Backend::Sqlite => Self::start_configured("sqlite://data/liandong.db", seconds, extra),
            Backend::Postgres => {
                let database = PostgresDatabase::create()?;
                let mut bed = Self::start_configured(&database.url, seconds, extra)?;
                bed._postgres = Some(database);
                Ok(bed)
            }
        }
    }

    fn start_configured(
        database_url: &str,
        handshake_timeout_seconds: u64,
        extra: &str,
    ) -> anyhow::Result<Self> {
        // So that tests may open `database_url()` with
        // `sqlx::AnyConnection::connect` on either backend.
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir()?;
        let pki = Pki::create(dir.path())?;
        let config = dir.path().join("gateway.toml");
        let limits = if extra.contains("[limits]") {
            ""
        } else {
            UNLIMITED_PUBLISH_RATE
        };
        let delivery = if extra.contains("[delivery]") {
            String::new()
        } else {
            format!(
                "[delivery]\npoll_interval_ms = 200\nsubscription_lease_seconds = {TEST_LEASE_SECONDS}\n\n"
            )
        };
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nregistry = \"agencies.toml\"\n\n[tls]\nca = \"pki/ca.crt\"\n\
                 cert = \"pki/gateway.crt\"\nkey = \"pki/gateway.key\"\ncrls = [\"pki/ca.crl\"]\n\
                 handshake_timeout_seconds = {handshake_timeout_seconds}\n\n\
                 [signing]\nkey = \"pki/gateway.signing.pk8\"\n\n\
                 [database]\nurl = \"{database_url}\"\n\n{delivery}\
                 [shutdown]\ngrace_seconds = 5\n{limits}{extra}"
            ),
        )?;
        let gateway = GatewayProcess::start(&config, &dir.path().join("gateway.log"))?;
        let database_url = match database_url.strip_prefix("sqlite://") {
            Some(path) if !path.starts_with('/') => {
                format!("sqlite://{}", dir.path().join(path).display())
            }
            _ => database_url.to_owned(),
        };
        Ok(Self {
            dir,
            pki,
            config,
            gateway,
            database_url,
            _postgres: None,
        })
    }

    /// The backend the gateway runs on.
    pub fn backend(&self) -> Backend {
        Backend::of_url(&self.database_url)
    }

    /// Starts another gateway replica on the same config and database (its
    /// own port; its log in `gateway-<name>.log`), as several replicas
    /// share one PostgreSQL in production. Only PostgreSQL supports that:
    /// guard the test with [`skip_unless_postgres`].
    pub fn start_replica(&self, name: &str) -> anyhow::Result<GatewayProcess> {
        anyhow::ensure!(
            self.backend() == Backend::Postgres,
            "gateway replicas share a PostgreSQL database; this test bed runs on SQLite"
        );
        GatewayProcess::start(
            &self.config,
            &self.dir.path().join(format!("gateway-{name}.log")),
        )
    }

    /// A client of a given gateway process (a replica) authenticated as a
    /// registered agency.
    pub async fn client_of(
        &self,
        gateway: &GatewayProcess,
        agency: &str,
    ) -> ExchangeClient<Channel> {
        let channel = self
            .pki
            .credentials(agency)
            .connect(&gateway.url(), None)
            .await
            .expect("connect to the gateway replica");
        ExchangeClient::new(channel)
    }

    /// Restarts the gateway on the same database (after it exited).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.gateway = GatewayProcess::start(&self.config, &self.dir.path().join("gateway.log"))?;
        Ok(())
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Waits up to ten seconds for `needle` to appear in the gateway's log;
    /// panics with `what` and the log otherwise.
    pub async fn wait_for_log(&self, needle: &str, what: &str) {
        self.wait_for_log_within(needle, what, Duration::from_secs(10))
            .await;
    }

    /// Waits up to `limit` for `needle` to appear in the gateway's log;
    /// panics with `what` and the log otherwise.
    pub async fn wait_for_log_within(&self, needle: &str, what: &str, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while !self.log().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGHUP and waits until the gateway has reloaded its registry
    /// and policy (the first reload of this test bed).
    pub async fn reload_rules(&self) {
        self.gateway.signal(nix::sys::signal::Signal::SIGHUP);
        self.wait_for_log("registry and policy reloaded", "no reload")
            .await;
    }

    /// The URL of the gateway's database, on either backend
    /// (`sqlite:///abs/path` or `postgres://…/ld_bed_…`). Open it with
    /// [`connect_database`](Self::connect_database) or
    /// `sqlx::AnyConnection::connect` and portable SQL (`$1` parameters).
    pub fn database_url(&self) -> String {
        self.database_url.clone()
    }

    /// A direct connection to the gateway's database, on either backend.
    pub async fn connect_database(&self) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::AnyConnection::connect(&self.database_url)
            .await
            .unwrap_or_else(|e| panic!("open the database {}: {e}", self.database_url))
    }

    /// Rows in the notifications table, read straight from the database.
    pub async fn stored_count(&self) -> i64 {
        let mut conn = self.connect_database().await;
        sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
            .fetch_one(&mut conn)
            .await
            .expect("count")
    }

    /// A connected Exchange client authenticated as a registered agency.
    pub async fn client(&self, agency: &str) -> ExchangeClient<Channel> {
        self.client_with(&self.pki.credentials(agency))
            .await
            .expect("connect to the gateway")
    }

    /// A client with arbitrary credentials; the error is the transport's.
    pub async fn client_with(
        &self,
        credentials: &ClientCredentials,
    ) -> Result<ExchangeClient<Channel>, String> {
        let channel = credentials
            .connect(&self.gateway.url(), None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ExchangeClient::new(channel))
    }
}

/// A well-formed notification; tests change what they need.
pub fn notification(
    id: &str,
    case_ref: &str,
    event: pb::EventType,
    level: pb::Confidentiality,
    recipients: &[&str],
) -> pb::Notification {
    pb::Notification {
        notification_id: id.to_owned(),
        case_ref: case_ref.to_owned(),
        event: event as i32,
        confidentiality: level as i32,
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        confidentiality_note: if recipients.is_empty() {
            String::new()
        } else {
            "侦查阶段，防止串供".to_owned()
        },
        region: "140423".to_owned(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        summary: format!("summary of {id}"),
        ..Default::default()
    }
}

/// Publishes one notification.
pub async fn publish(
    client: &mut ExchangeClient<Channel>,
    n: pb::Notification,
) -> Result<pb::PublishReceipt, Status> {
    client
        .publish(pb::PublishRequest {
            notification: Some(n),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Publishes INTERNAL clues `{prefix}{i}` on `case_ref` for each `i` in
/// `range`, one at a time and in order; returns their receipts.
pub async fn publish_clues(
    client: &mut ExchangeClient<Channel>,
    prefix: &str,
    case_ref: &str,
    range: std::ops::Range<usize>,
) -> Vec<pb::PublishReceipt> {
    let mut receipts = Vec::with_capacity(range.len());
    for i in range {
        let n = notification(
            &format!("{prefix}{i}"),
            case_ref,
            pb::EventType::ClueShared,
            pb::Confidentiality::Internal,
            &[],
        );
        receipts.push(
            publish(client, n)
                .await
                .expect("the gateway accepts a well-formed clue"),
        );
    }
    receipts
}

/// The usual path of a case through the mechanism, each step with the
/// agency that publishes it: the bureau transfers to the police, which
/// acknowledge, file and request an arrest; the procuratorate approves it,
/// prosecutes and records the judgment.
pub const LIFECYCLE: [(&str, pb::EventType); 7] = [
    ("cz-eeb", pb::EventType::CaseTransferred),
    ("cz-psb", pb::EventType::TransferReceived),
    ("cz-psb", pb::EventType::CaseFiled),
    ("cz-psb", pb::EventType::ArrestRequested),
    ("cz-procuratorate", pb::EventType::ArrestApproved),
    ("cz-procuratorate", pb::EventType::ProsecutionFiled),
    ("cz-procuratorate", pb::EventType::JudgmentRecorded),
];

/// Publishes the steps of [`LIFECYCLE`] on `case_ref` from the first
/// through `last`, INTERNAL, each from its agency, so that the case
/// accepts what follows `last`; returns their receipts. The ids are
/// `{case_ref}.{step}` ('/' read as '.').
pub async fn publish_lifecycle(
    bed: &Testbed,
    case_ref: &str,
    last: pb::EventType,
) -> Vec<pb::PublishReceipt> {
    let steps = LIFECYCLE
        .iter()
        .position(|(_, event)| *event == last)
        .expect("an event of the lifecycle");
    let mut receipts = Vec::new();
    for (i, (agency, event)) in LIFECYCLE[..=steps].iter().enumerate() {
        let mut client = bed.client(agency).await;
        let id = format!("{}.{i}", case_ref.replace('/', "."));
        let n = notification(&id, case_ref, *event, pb::Confidentiality::Internal, &[]);
        receipts.push(
            publish(&mut client, n)
                .await
                .unwrap_or_else(|status| panic!("{id} ({event:?}) refused: {status:?}")),
        );
    }
    receipts
}

/// The county transfer the deadline rules watch: `bureau`
/// (cz-eeb-xiangyuan) transfers `case_ref` to the county police
/// (`police`, cz-psb-xiangyuan), who acknowledge its receipt, which
/// starts their clock to decide on filing. Both RESTRICTED, each to the
/// other; the ids are `transfer_id` and `received_id`. Returns the
/// receipt of the acknowledgement (the clock's start).
pub async fn publish_county_transfer_received(
    bureau: &mut ExchangeClient<Channel>,
    police: &mut ExchangeClient<Channel>,
    case_ref: &str,
    transfer_id: &str,
    received_id: &str,
) -> pb::PublishReceipt {
    use pb::{Confidentiality::Restricted, EventType};
    let transfer = notification(
        transfer_id,
        case_ref,
        EventType::CaseTransferred,
        Restricted,
        &["cz-psb-xiangyuan"],
    );
    publish(bureau, transfer)
        .await
        .unwrap_or_else(|status| panic!("the transfer {transfer_id} refused: {status:?}"));
    let received = notification(
        received_id,
        case_ref,
        EventType::TransferReceived,
        Restricted,
        &["cz-eeb-xiangyuan"],
    );
    publish(police, received)
        .await
        .unwrap_or_else(|status| panic!("the receipt {received_id} refused: {status:?}"))
}

/// What a subscription stream did next ([`Subscriber::next_event`]).
#[derive(Debug)]
pub enum Next {
    /// A delivery arrived.
    Delivery(Box<pb::Delivery>),
    /// Nothing arrived within the wait; the stream is still open.
    Silent,
    /// The gateway ended the stream cleanly, without a status.
    Ended,
    /// The stream ended with an error status.
    Failed(Status),
}

impl std::fmt::Display for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Delivery(delivery) => write!(
                f,
                "delivered sequence {} (attempt {})",
                delivery.sequence, delivery.attempt
            ),
            Self::Silent => f.write_str("stayed silent"),
            Self::Ended => f.write_str("was ended cleanly by the gateway"),
            Self::Failed(status) => write!(f, "failed: {status:?}"),
        }
    }
}

/// The request that acknowledges `sequences` on a subscription stream.
pub fn ack_request(sequences: &[u64]) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        kind: Some(pb::subscribe_request::Kind::Ack(pb::Ack {
            sequences: sequences.to_vec(),
        })),
    }
}

/// An open subscription stream and its request side.
pub struct Subscriber {
    requests: mpsc::Sender<pb::SubscribeRequest>,
    deliveries: Streaming<pb::Delivery>,
}

impl Subscriber {
    /// Opens `name` from the beginning with `filter`.
    pub async fn open(client: &mut ExchangeClient<Channel>, name: &str) -> Result<Self, Status> {
        Self::open_with(
            client,
            pb::SubscriptionOpen {
                name: name.to_owned(),
                start: Some(pb::StartPosition {
                    position: Some(pb::start_position::Position::Beginning(true)),
                }),
                ..Default::default()
            },
        )
        .await
    }

    /// Opens a subscription with a full `SubscriptionOpen`.
    pub async fn open_with(
        client: &mut ExchangeClient<Channel>,
        open: pb::SubscriptionOpen,
    ) -> Result<Self, Status> {
        let (requests, rx) = mpsc::channel(16);
        requests
            .send(pb::SubscribeRequest {
                kind: Some(pb::subscribe_request::Kind::Open(open)),
            })
            .await
            .expect("the request stream is open");
        let deliveries = client
            .subscribe(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self {
            requests,
            deliveries,
        })
    }

    /// The next delivery, or None when none arrives within `wait` or the
    /// stream ends. A stream error is returned as Err. Use
    /// [`next_event`](Self::next_event) where silence and a closed stream
    /// must be told apart.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<pb::Delivery>, Status> {
        match self.next_event(wait).await {
            Next::Delivery(delivery) => Ok(Some(*delivery)),
            Next::Silent | Next::Ended => Ok(None),
            Next::Failed(status) => Err(status),
        }
    }

    /// What the stream does within `wait`: a delivery, silence (still
    /// open), a clean end, or a failure status.
    pub async fn next_event(&mut self, wait: Duration) -> Next {
        match tokio::time::timeout(wait, self.deliveries.message()).await {
            Err(_) => Next::Silent,
            Ok(Ok(Some(delivery))) => Next::Delivery(Box::new(delivery)),
            Ok(Ok(None)) => Next::Ended,
            Ok(Err(status)) => Next::Failed(status),
        }
    }

    /// The next delivery within `wait`; panics naming `what` when the
    /// stream stays silent, ends or fails instead.
    pub async fn expect_delivery(&mut self, wait: Duration, what: &str) -> pb::Delivery {
        match self.next_event(wait).await {
            Next::Delivery(delivery) => *delivery,
            other => panic!("expected {what}, but the stream {other}"),
        }
    }

    /// Asserts that nothing arrives within `wait` *and* that the stream is
    /// still open: a delivery, a clean end or a failure each fail the test,
    /// so a gateway that closes streams early cannot pass for a quiet one.
    /// Prefer a positive signal (a marker published after) where one
    /// exists; this is for what only time can show (no redelivery before a
    /// timeout).
    pub async fn expect_silence(&mut self, wait: Duration, why: &str) {
        match self.next_event(wait).await {
            Next::Silent => {}
            other => panic!("expected silence ({why}), but the stream {other}"),
        }
    }

    /// The status the stream fails with within `wait`; panics when it
    /// delivers, stays silent or ends cleanly instead.
    pub async fn expect_failure(&mut self, wait: Duration, what: &str) -> Status {
        match self.next_event(wait).await {
            Next::Failed(status) => status,
            other => panic!("expected the stream to fail ({what}), but it {other}"),
        }
    }

    /// Acknowledges sequences.
    pub async fn ack(&self, sequences: &[u64]) {
        self.requests
            .send(ack_request(sequences))
            .await
            .expect("the request stream is open");
    }

    /// Closes the request side and drains the stream until the gateway
    /// ends it: every acknowledgement sent before is then processed and the
    /// cursor persisted. Returns the deliveries that were still in flight.
    pub async fn close(self) -> Result<Vec<pb::Delivery>, Status> {
        let Self {
            requests,
            mut deliveries,
        } = self;
        drop(requests);
        let mut rest = Vec::new();
        while let Some(delivery) = deliveries.message().await? {
            rest.push(delivery);
        }
        Ok(rest)
    }

    /// Receives `count` deliveries (each within `wait`), acking each.
    pub async fn take_acked(&mut self, count: usize, wait: Duration) -> Vec<pb::Delivery> {
        let mut taken = Vec::with_capacity(count);
        while taken.len() < count {
            match self.next_event(wait).await {
                Next::Delivery(delivery) => {
                    self.ack(&[delivery.sequence]).await;
                    taken.push(*delivery);
                }
                other => panic!(
                    "expected {count} deliveries, got {}, then the stream {other}",
                    taken.len()
                ),
            }
        }
        taken
    }
}
