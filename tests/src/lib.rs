//! Test bed for end-to-end tests: a throwaway directory with a dev PKI made
//! by `liandong-certs` (the dev registry of `deploy/dev/agencies.toml`), a
//! SQLite database, and the real `liandong-gateway` binary running as a
//! child process on a loopback port. Clients connect over real mutual TLS.
//!
//! Nothing here fakes the gateway: tests drive the same binary operators
//! run. The child is killed when the test bed is dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
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

/// The dev registry: the agencies of the Changzhi mechanism.
pub const REGISTRY: &str = include_str!("../../deploy/dev/agencies.toml");

/// Path of a workspace binary, built once per test process.
pub fn binary(package: &str, bin: &str) -> PathBuf {
    static GATEWAY: OnceLock<PathBuf> = OnceLock::new();
    static ADAPTER: OnceLock<PathBuf> = OnceLock::new();
    static CERTS: OnceLock<PathBuf> = OnceLock::new();
    let cell = match bin {
        "liandong-gateway" => &GATEWAY,
        "liandong-adapter" => &ADAPTER,
        _ => &CERTS,
    };
    cell.get_or_init(|| {
        let mut build = escargot::CargoBuild::new();
        // Under `cargo test`/`cargo run` these describe the calling
        // package; inherited by the nested build, they make build scripts
        // that watch them (ring's) rerun every time.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || key.starts_with("CARGO_BIN_")
            {
                build = build.env_remove(key);
            }
        }
        build
            .package(package)
            .bin(bin)
            .current_release()
            .run()
            .unwrap_or_else(|e| panic!("building {bin}: {e}"))
            .path()
            .to_owned()
    })
    .clone()
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
}

impl GatewayProcess {
    /// Starts the gateway with `config` and waits until it listens.
    /// Its stderr goes to `log`.
    pub fn start(config: &Path, log: &Path) -> anyhow::Result<Self> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut child = Command::new(binary("liandong-gateway", "liandong-gateway"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("LIANDONG_LOG", "info,liandong_gateway=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("spawning liandong-gateway")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("liandong-gateway listening on https://") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => Ok(Self {
                child: Some(child),
                addr: addr.parse()?,
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
}

impl Testbed {
    /// A fresh test bed with the default configuration.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with("")
    }

    /// A fresh test bed; `extra` is appended to the generated config (extra
    /// TOML tables such as `[limits]`).
    pub fn start_with(extra: &str) -> anyhow::Result<Self> {
        Self::start_on("sqlite://data/liandong.db", extra)
    }

    /// A fresh test bed on the given database URL (SQLite paths relative to
    /// the test bed's directory, or a PostgreSQL URL).
    pub fn start_on(database_url: &str, extra: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let pki = Pki::create(dir.path())?;
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nregistry = \"agencies.toml\"\n\n[tls]\nca = \"pki/ca.crt\"\n\
                 cert = \"pki/gateway.crt\"\nkey = \"pki/gateway.key\"\nhandshake_timeout_seconds = 2\n\n\
                 [database]\nurl = \"{database_url}\"\n\n[delivery]\npoll_interval_ms = 200\n\n\
                 [shutdown]\ngrace_seconds = 5\n{extra}"
            ),
        )?;
        let gateway = GatewayProcess::start(&config, &dir.path().join("gateway.log"))?;
        Ok(Self {
            dir,
            pki,
            config,
            gateway,
        })
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
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
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

    /// The SQLite database URL.
    pub fn database_url(&self) -> String {
        format!(
            "sqlite://{}",
            self.dir.path().join("data/liandong.db").display()
        )
    }

    /// Rows in the notifications table, read straight from the database.
    pub async fn stored_count(&self) -> i64 {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&self.database_url())
            .await
            .expect("open the database");
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
    /// stream ends. A stream error is returned as Err.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<pb::Delivery>, Status> {
        match tokio::time::timeout(wait, self.deliveries.message()).await {
            Ok(result) => result,
            Err(_) => Ok(None),
        }
    }

    /// Acknowledges sequences.
    pub async fn ack(&self, sequences: &[u64]) {
        self.requests
            .send(pb::SubscribeRequest {
                kind: Some(pb::subscribe_request::Kind::Ack(pb::Ack {
                    sequences: sequences.to_vec(),
                })),
            })
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
            match self.next(wait).await {
                Ok(Some(delivery)) => {
                    self.ack(&[delivery.sequence]).await;
                    taken.push(delivery);
                }
                Ok(None) => panic!(
                    "expected {count} deliveries, got {} before silence",
                    taken.len()
                ),
                Err(status) => panic!(
                    "subscription failed after {} deliveries: {status:?}",
                    taken.len()
                ),
            }
        }
        taken
    }
}
