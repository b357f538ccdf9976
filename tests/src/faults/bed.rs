//! The system under test for a fault run: a throwaway directory with a dev
//! PKI, the real `liandong-gateway` on a fixed loopback port (so clients
//! find it again after every restart) over SQLite or a fresh PostgreSQL
//! schema, and one `liandong-adapter run` daemon with an HTTP source and a
//! drop folder.
//!
//! The SQLite database lives on a small tmpfs mounted for the run, and on
//! PostgreSQL the gateway's tables are moved to a tablespace on such a
//! tmpfs, so the store can be filled for real. Everything mounted or
//! created is removed by [`Bed::teardown`], which the runner always calls.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use sqlx::{AnyConnection, Connection};

use crate::adapter_bed::free_port;
use crate::{GatewayProcess, Pki, REGISTRY, TEST_LEASE_SECONDS, binary};

use super::Backend;
use super::history::Change;

/// The gateway cuts a stream it could not send to for this long; the
/// stall fault checks that it does.
pub const STALL_TIMEOUT_SECONDS: u64 = 3;

/// Size of the tmpfs that holds the store.
const STORE_TMPFS: &str = "size=48m";

/// The agency whose adapter daemon publishes in the run.
pub const ADAPTER_AGENCY: &str = "cz-eeb-xiangyuan";

/// PostgreSQL the harness uses unless `LIANDONG_TEST_POSTGRES_URL` says otherwise.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The running system and everything needed to put it back.
pub struct Bed {
    /// The throwaway directory.
    pub dir: tempfile::TempDir,
    /// Its PKI.
    pub pki: Pki,
    /// The gateway's fixed port.
    pub port: u16,
    /// Which store.
    pub backend: Backend,
    /// The database URL the harness reads and tampers with directly.
    pub database_url: String,
    /// The gateway's config file.
    pub config: PathBuf,
    /// The running gateway, if any.
    pub gateway: Option<GatewayProcess>,
    /// The running adapter daemon, if any.
    pub adapter: Option<Child>,
    /// The adapter's config file.
    pub adapter_config: PathBuf,
    /// The adapter's HTTP source port.
    pub adapter_port: u16,
    /// The adapter's drop folder.
    pub drop_folder: PathBuf,
    /// Where the store's tmpfs is mounted, if it is.
    pub store_mount: Option<PathBuf>,
    /// The PostgreSQL schema of the run.
    pg_schema: Option<String>,
    /// The PostgreSQL tablespace on the tmpfs, if made.
    pub tablespace: Option<String>,
}

async fn connect_base(url: &str) -> anyhow::Result<AnyConnection> {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(url)
        .await
        .with_context(|| "connecting to the database".to_owned())
}

fn mount_tmpfs(at: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(at)?;
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", STORE_TMPFS, "tmpfs"])
        .arg(at)
        .status()
        .context("running mount")?;
    anyhow::ensure!(
        status.success(),
        "mount tmpfs at {} failed: {status}",
        at.display()
    );
    Ok(())
}

impl Bed {
    /// Makes the PKI, the store and the configs; starts nothing.
    pub async fn create(backend: Backend) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let pki = Pki::create(dir.path())?;
        let port = free_port();
        let mut store_mount = None;
        let mut pg_schema = None;
        let mut tablespace = None;
        let (config_url, database_url) = match backend {
            Backend::Sqlite => {
                let data = dir.path().join("data");
                match mount_tmpfs(&data) {
                    Ok(()) => store_mount = Some(data.clone()),
                    Err(error) => {
                        eprintln!("store not on a tmpfs ({error}); the full fault cannot run")
                    }
                }
                (
                    "sqlite://data/liandong.db".to_owned(),
                    format!("sqlite://{}", data.join("liandong.db").display()),
                )
            }
            Backend::Postgres => {
                let base = std::env::var("LIANDONG_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                let mut conn = connect_base(&base).await?;
                let schema = format!(
                    "ld_faults_{}_{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_micros()
                );
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut conn)
                    .await?;
                pg_schema = Some(schema.clone());
                // A tablespace on a tmpfs owned by the server's user.
                let mount = PathBuf::from(format!("/var/tmp/{schema}"));
                match Self::make_tablespace(&mut conn, &mount, &schema).await {
                    Ok(name) => {
                        store_mount = Some(mount);
                        tablespace = Some(name);
                    }
                    Err(error) => {
                        eprintln!(
                            "no tablespace on a tmpfs ({error:#}); the full fault cannot run"
                        );
                        let _ = Command::new("umount").arg("-l").arg(&mount).status();
                    }
                }
                let separator = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
                (url.clone(), url)
            }
        };
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nregistry = \"agencies.toml\"\n\n[tls]\nca = \"pki/ca.crt\"\n\
                 cert = \"pki/gateway.crt\"\nkey = \"pki/gateway.key\"\ncrls = [\"pki/ca.crl\"]\nhandshake_timeout_seconds = 2\n\n\
                 [signing]\nkey = \"pki/gateway.signing.pk8\"\n\n\
                 [database]\nurl = \"{config_url}\"\n\n[delivery]\npoll_interval_ms = 200\nstall_timeout_seconds = {STALL_TIMEOUT_SECONDS}\n\
                 subscription_lease_seconds = {TEST_LEASE_SECONDS}\n\n\
                 [shutdown]\ngrace_seconds = 5\n"
            ),
        )?;
        let adapter_port = free_port();
        let drop_folder = dir.path().join("inbox");
        std::fs::create_dir_all(&drop_folder)?;
        let adapter_config = dir.path().join("adapter.toml");
        // The HTTP source's secret, private to the adapter's user.
        let token = dir.path().join("http.token");
        std::fs::write(&token, format!("{}\n", crate::adapter_bed::HTTP_TOKEN))?;
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let agency = ADAPTER_AGENCY;
        std::fs::write(
            &adapter_config,
            format!(
                "agency = \"{agency}\"\nsigning_key = \"pki/agencies/{agency}.signing.pk8\"\n\n\
                 [gateway]\nurl = \"https://127.0.0.1:{port}\"\nserver_name = \"localhost\"\nca = \"pki/ca.crt\"\n\
                 cert = \"pki/agencies/{agency}.crt\"\nkey = \"pki/agencies/{agency}.key\"\n\n\
                 [outbox]\npath = \"adapter/state.db\"\nretry_initial_ms = 50\nretry_max_ms = 300\n\n\
                 [[source]]\nkind = \"http\"\nlisten = \"127.0.0.1:{adapter_port}\"\ntoken_file = \"http.token\"\n\n\
                 [[source]]\nkind = \"folder\"\npath = \"{}\"\npoll_interval_ms = 50\n",
                drop_folder.display()
            ),
        )?;
        let bed = Self {
            dir,
            pki,
            port,
            backend,
            database_url,
            config,
            gateway: None,
            adapter: None,
            adapter_config,
            adapter_port,
            drop_folder,
            store_mount,
            pg_schema,
            tablespace,
        };
        if bed.tablespace.is_some() {
            bed.move_tables_to_tablespace().await?;
        }
        Ok(bed)
    }

    async fn make_tablespace(
        conn: &mut AnyConnection,
        mount: &Path,
        name: &str,
    ) -> anyhow::Result<String> {
        mount_tmpfs(mount)?;
        let location = mount.join("ts");
        std::fs::create_dir_all(&location)?;
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(mount)
            .status()?;
        anyhow::ensure!(status.success(), "chown postgres failed");
        sqlx::query(&format!(
            "CREATE TABLESPACE {name} LOCATION '{}'",
            location.display()
        ))
        .execute(conn)
        .await
        .context("CREATE TABLESPACE")?;
        Ok(name.to_owned())
    }

    /// Creates the schema with `liandong-gateway migrate` and moves every
    /// table and index of it to the tablespace on the tmpfs.
    async fn move_tables_to_tablespace(&self) -> anyhow::Result<()> {
        let status = Command::new(binary("liandong-gateway"))
            .arg("migrate")
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "liandong-gateway migrate failed: {status}"
        );
        let (Some(schema), Some(space)) = (&self.pg_schema, &self.tablespace) else {
            return Ok(());
        };
        let mut conn = self.connect().await?;
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1")
                .bind(schema)
                .fetch_all(&mut conn)
                .await?;
        for table in tables {
            sqlx::query(&format!(
                "ALTER TABLE {schema}.{table} SET TABLESPACE {space}"
            ))
            .execute(&mut conn)
            .await?;
        }
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = $1")
                .bind(schema)
                .fetch_all(&mut conn)
                .await?;
        for index in indexes {
            sqlx::query(&format!(
                "ALTER INDEX {schema}.{index} SET TABLESPACE {space}"
            ))
            .execute(&mut conn)
            .await?;
        }
        Ok(())
    }

    /// A direct connection to the store.
    pub async fn connect(&self) -> anyhow::Result<AnyConnection> {
        connect_base(&self.database_url).await
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The gateway's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// Starts the gateway once; the error says why it did not listen.
    pub fn try_start_gateway(&mut self) -> anyhow::Result<()> {
        assert!(self.gateway.is_none(), "the gateway is already running");
        self.gateway = Some(GatewayProcess::start(&self.config, &self.log_path())?);
        Ok(())
    }

    /// Starts the gateway, retrying while its port is still being released.
    pub fn start_gateway(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.try_start_gateway() {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Signals the gateway and waits for it to exit.
    pub fn stop_gateway(&mut self, signal: Signal, limit: Duration) -> anyhow::Result<ExitStatus> {
        let mut gateway = self.gateway.take().context("the gateway is not running")?;
        gateway.signal(signal);
        gateway.wait(limit)
    }

    /// The gateway's resident memory in KiB (0 when unknown).
    pub fn gateway_rss_kib(&self) -> u64 {
        let Some(gateway) = &self.gateway else {
            return 0;
        };
        std::fs::read_to_string(format!("/proc/{}/status", gateway.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Starts the adapter daemon, retrying while it refuses to start (its
    /// killed predecessor may still look alive for a moment).
    pub fn start_adapter(&mut self) -> anyhow::Result<()> {
        let log = self.dir.path().join("adapter.log");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let before = std::fs::read_to_string(&log).map(|l| l.len()).unwrap_or(0);
            let mut child = Command::new(binary("liandong-adapter"))
                .arg("run")
                .arg("--config")
                .arg(&self.adapter_config)
                .current_dir(self.dir.path())
                .env("LIANDONG_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)?,
                )
                .spawn()
                .context("spawning liandong-adapter run")?;
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text[before.min(text.len())..].contains("liandong-adapter running for") {
                    self.adapter = Some(child);
                    return Ok(());
                }
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let output = child.wait_with_output()?;
                    bail!(
                        "the adapter did not start ({}); log {}:\n{text}",
                        output.status,
                        log.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if Instant::now() > deadline {
                bail!("the adapter kept exiting at start");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Signals the adapter and waits for it to exit.
    pub fn stop_adapter(&mut self, signal: Signal) -> anyhow::Result<ExitStatus> {
        let mut child = self.adapter.take().context("the adapter is not running")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)?;
        Ok(child.wait()?)
    }

    /// How many reloads the gateway has logged so far.
    pub fn reloads(&self) -> usize {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .matches("registry and policy reloaded")
            .count()
    }

    /// Writes the registry (the dev one, or with `change` to `target`),
    /// sends SIGHUP and waits until the gateway logs the reload.
    pub async fn reload_registry(&self, change: Option<(Change, &str)>) -> anyhow::Result<()> {
        let text = match change {
            None => REGISTRY.to_owned(),
            Some((Change::Lowered, target)) => change_agency(target, |block| {
                let line = block
                    .lines()
                    .find(|l| l.starts_with("clearance"))
                    .unwrap_or_default()
                    .to_owned();
                block.replace(&line, "clearance = \"INTERNAL\"")
            }),
            Some((Change::Removed, target)) => change_agency(target, |_| String::new()),
        };
        let registry = self.dir.path().join("agencies.toml");
        std::fs::write(&registry, text)?;
        let before = self.reloads();
        let gateway = self
            .gateway
            .as_ref()
            .context("the gateway is not running")?;
        gateway.signal(Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.reloads() <= before {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the gateway did not log a reload"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Removes what the run mounted and created, stopping what still runs.
    pub async fn teardown(mut self) {
        if std::env::var_os("LIANDONG_FAULTS_KEEP").is_some() {
            eprintln!("keeping {}", self.dir.path().display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("tempdir"),
            ));
        }
        if let Some(mut gateway) = self.gateway.take() {
            gateway.signal(Signal::SIGKILL);
            let _ = gateway.wait(Duration::from_secs(10));
        }
        if let Some(mut child) = self.adapter.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(schema) = &self.pg_schema
            && let Ok(mut conn) = self.connect().await
        {
            let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut conn)
                .await;
            if let Some(space) = &self.tablespace {
                let _ = sqlx::query(&format!("DROP TABLESPACE {space}"))
                    .execute(&mut conn)
                    .await;
            }
        }
        if let Some(mount) = &self.store_mount {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
            if self.backend == Backend::Postgres {
                let _ = std::fs::remove_dir_all(mount);
            }
        }
    }
}

/// The dev registry with the `[[agency]]` block of `target` passed
/// through `edit`.
fn change_agency(target: &str, edit: impl Fn(&str) -> String) -> String {
    let marker = "[[agency]]\n";
    REGISTRY
        .split_inclusive(marker)
        .map(|block| {
            if block.contains(&format!("id = \"{target}\"\n")) {
                // The block runs up to the next marker, which it ends with.
                let (body, tail) = match block.strip_suffix(marker) {
                    Some(body) => (body, marker),
                    None => (block, ""),
                };
                let edited = edit(body);
                if edited.is_empty() {
                    // The marker before this block (ending the previous
                    // element) now opens the next block.
                    return String::new();
                }
                format!("{edited}{tail}")
            } else {
                block.to_owned()
            }
        })
        .collect()
}
