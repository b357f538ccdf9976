//! Test bed for the agency adapter daemon: the real `liandong-gateway` on a
//! fixed loopback port (so it can be stopped and started again at the same
//! address, as in an outage), `liandong-adapter run` child processes with
//! configs written here, a minimal HTTP/1.1 client for the adapter's local
//! endpoint, and a minimal webhook server that records what it is sent.
//!
//! Nothing here fakes the adapter or the gateway: tests drive the binaries
//! operators run, and kill them with real signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use sqlx::Connection;
use tonic::transport::Channel;

use liandong_core::pb::exchange_client::ExchangeClient;

use crate::{Backend, GatewayProcess, Pki, PostgresDatabase, TEST_LEASE_SECONDS, binary};

/// A TCP port on 127.0.0.1 for a child process to listen on, which
/// nothing else is handed while this process lives: it lies below the
/// kernel's ephemeral range (so no bind to port 0 and no outgoing
/// connection gets it), it is reserved by a lock file that every test
/// process honours (`$TMPDIR/liandong-test-ports/<port>.lock`, released
/// when the process exits, even by a crash), and it was free when chosen.
/// (Binding port 0 and closing the listener instead lets a parallel test
/// be handed the same number before the child binds it.)
pub fn free_port() -> u16 {
    use nix::fcntl::{Flock, FlockArg};
    static RESERVED: Mutex<Vec<Flock<std::fs::File>>> = Mutex::new(Vec::new());
    const FIRST: u16 = 20_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    assert!(
        ephemeral_low > FIRST + 1_000,
        "the ephemeral port range starts at {ephemeral_low}: no room below it for test ports"
    );
    let span = u32::from(ephemeral_low - FIRST);
    let locks = std::env::temp_dir().join("liandong-test-ports");
    std::fs::create_dir_all(&locks).expect("create the port lock directory");
    // Processes start at different places, so they rarely contend.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for step in 0..span {
        let port = FIRST + u16::try_from((start + step) % span).expect("below the range end");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(locks.join(format!("{port}.lock")))
            .expect("open a port lock file");
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            RESERVED.lock().expect("reserved ports").push(lock);
            return port;
        }
    }
    panic!("no free port between {FIRST} and {ephemeral_low}")
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`;
/// panics naming `what` otherwise.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory with a dev PKI, a gateway config on a fixed port, and the
/// gateway (when started).
pub struct AdapterBed {
    /// The throwaway directory.
    pub dir: tempfile::TempDir,
    /// Its PKI (`pki/` in `dir`).
    pub pki: Pki,
    /// The gateway's fixed port.
    pub port: u16,
    /// The running gateway, if any.
    pub gateway: Option<GatewayProcess>,
    /// The gateway's database URL, as reached from outside the bed's
    /// directory.
    database_url: String,
    /// The PostgreSQL database made for this bed, if the gateway runs on
    /// PostgreSQL; dropped after the gateway (fields drop in order).
    _postgres: Option<PostgresDatabase>,
}

/// The HTTP source's token in every bed: the content of `http.token` in
/// the bed's directory, which [`http`] presents.
pub const HTTP_TOKEN: &str = "dGVzdC1iZWQtaHR0cC1zb3VyY2UtdG9rZW4K";

/// The `[[source]] kind = "http"` table of an adapter of the bed listening
/// on `127.0.0.1:port`, with the bed's token file.
pub fn http_source_config(port: u16) -> String {
    format!(
        "\n[[source]]\nkind = \"http\"\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"http.token\"\n"
    )
}

impl AdapterBed {
    /// A PKI and a gateway config on the backend `LIANDONG_TEST_BACKEND`
    /// chooses, and the HTTP source's token file; the gateway is not
    /// started.
    pub fn new() -> Self {
        // So that tests may open `database_url()` with
        // `sqlx::AnyConnection::connect` on either backend.
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("temporary directory");
        let pki = Pki::create(dir.path()).expect("dev PKI");
        let token = dir.path().join("http.token");
        std::fs::write(&token, format!("{HTTP_TOKEN}\n")).expect("write the token file");
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("make the token file private");
        let postgres = match Backend::from_env() {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PostgresDatabase::create().expect("a test database")),
        };
        let (config_url, database_url) = match &postgres {
            None => (
                "sqlite://data/liandong.db".to_owned(),
                format!("sqlite://{}", dir.path().join("data/liandong.db").display()),
            ),
            Some(database) => (database.url.clone(), database.url.clone()),
        };
        let port = free_port();
        std::fs::write(
            dir.path().join("gateway.toml"),
            format!(
                "listen = \"127.0.0.1:{port}\"\nregistry = \"agencies.toml\"\n\n[tls]\nca = \"pki/ca.crt\"\n\
                 cert = \"pki/gateway.crt\"\nkey = \"pki/gateway.key\"\ncrls = [\"pki/ca.crl\"]\nhandshake_timeout_seconds = 2\n\n\
                 [signing]\nkey = \"pki/gateway.signing.pk8\"\n\n\
                 [database]\nurl = \"{config_url}\"\n\n[delivery]\npoll_interval_ms = 200\n\
                 subscription_lease_seconds = {TEST_LEASE_SECONDS}\n\n\
                 [shutdown]\ngrace_seconds = 5\n"
            ),
        )
        .expect("write the gateway config");
        Self {
            dir,
            pki,
            port,
            gateway: None,
            database_url,
            _postgres: postgres,
        }
    }

    /// Starts the gateway (again) on its fixed port and database; panics
    /// with the reason when it does not start.
    pub fn start_gateway(&mut self) {
        assert!(self.gateway.is_none(), "the gateway is already running");
        let config = self.dir.path().join("gateway.toml");
        let log = self.dir.path().join("gateway.log");
        // The port is reserved for this bed (see `free_port`), so the only
        // conflict left is the previous gateway's socket not yet released:
        // that alone is retried, briefly; any other failure is reported.
        let gateway = wait_for(
            "the gateway's port is released",
            Duration::from_secs(10),
            || {
                let before = std::fs::read_to_string(&log).map_or(0, |text| text.len());
                match GatewayProcess::start(&config, &log) {
                    Ok(gateway) => Some(gateway),
                    Err(error) => {
                        let text = std::fs::read_to_string(&log).unwrap_or_default();
                        let attempt = &text[before.min(text.len())..];
                        assert!(
                            attempt.contains("cannot listen on") && attempt.contains("in use"),
                            "the gateway did not start: {error:#}"
                        );
                        None
                    }
                }
            },
        );
        assert_eq!(gateway.addr.port(), self.port);
        self.gateway = Some(gateway);
    }

    /// Stops the gateway with SIGTERM and checks it exits 0.
    pub fn stop_gateway(&mut self) {
        let mut gateway = self.gateway.take().expect("the gateway is running");
        gateway.signal(Signal::SIGTERM);
        let status = gateway
            .wait(Duration::from_secs(20))
            .expect("the gateway stops");
        assert!(status.success(), "gateway exit: {status}");
    }

    /// `https://127.0.0.1:PORT`.
    pub fn gateway_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A connected Exchange client authenticated as `agency`.
    pub async fn client(&self, agency: &str) -> ExchangeClient<Channel> {
        let channel = self
            .pki
            .credentials(agency)
            .connect(&self.gateway_url(), None)
            .await
            .expect("connect to the gateway");
        ExchangeClient::new(channel)
    }

    /// The gateway's notifications from `sender`, in sequence order:
    /// `(notification_id, sequence, payload)`.
    pub async fn stored(&self, sender: &str) -> Vec<(String, i64, Vec<u8>)> {
        let mut conn = self.connect_database().await;
        sqlx::query_as(
            "SELECT notification_id, sequence, payload FROM notifications WHERE sender = $1 ORDER BY sequence",
        )
        .bind(sender)
        .fetch_all(&mut conn)
        .await
        .expect("read notifications")
    }

    /// The gateway's database URL, on either backend.
    pub fn database_url(&self) -> String {
        self.database_url.clone()
    }

    /// A direct connection to the gateway's database, on either backend.
    pub async fn connect_database(&self) -> sqlx::AnyConnection {
        sqlx::AnyConnection::connect(&self.database_url)
            .await
            .unwrap_or_else(|e| panic!("open the gateway database {}: {e}", self.database_url))
    }

    /// The ids of [`stored`](Self::stored).
    pub async fn stored_ids(&self, sender: &str) -> Vec<String> {
        self.stored(sender)
            .await
            .into_iter()
            .map(|(id, _, _)| id)
            .collect()
    }

    /// The gateway's acknowledged cursor of a subscription (0 when none).
    pub async fn acked_through(&self, owner: &str, name: &str) -> i64 {
        let mut conn = self.connect_database().await;
        sqlx::query_scalar("SELECT acked_through FROM subscriptions WHERE owner = $1 AND name = $2")
            .bind(owner)
            .bind(name)
            .fetch_optional(&mut conn)
            .await
            .expect("read the subscription")
            .unwrap_or(0)
    }

    /// Writes `<name>.toml` for `agency`: its gateway credentials and
    /// signing key from the PKI, a state file under `<name>/`, fast
    /// retries, then `extra` (more tables). Returns the file.
    pub fn adapter_config(&self, name: &str, agency: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "agency = \"{agency}\"\nsigning_key = \"pki/agencies/{agency}.signing.pk8\"\n\n\
                 [gateway]\nurl = \"{}\"\nserver_name = \"localhost\"\nca = \"pki/ca.crt\"\n\
                 cert = \"pki/agencies/{agency}.crt\"\nkey = \"pki/agencies/{agency}.key\"\n\n\
                 [outbox]\npath = \"{name}/state.db\"\nretry_initial_ms = 50\nretry_max_ms = 300\n{extra}",
                self.gateway_url()
            ),
        )
        .expect("write the adapter config");
        path
    }

    /// A path inside the bed's directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }
}

impl Default for AdapterBed {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `liandong-adapter` with `args` to completion (standard input
/// empty unless `stdin` is given).
pub fn adapter_command(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(binary("liandong-adapter"))
        .args(args)
        .env_remove("LIANDONG_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn liandong-adapter");
    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for liandong-adapter")
}

/// `liandong-adapter status --json --config FILE`: exit code and report.
pub fn status(config: &Path) -> (i32, Value) {
    let config = config.to_str().expect("UTF-8 path");
    let output = adapter_command(&["--config", config, "status", "--json"], None);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "status printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), report)
}

/// Waits until `status` reports an empty outbox.
pub fn wait_drained(config: &Path, limit: Duration) -> Value {
    wait_for("the outbox is empty", limit, || {
        let (_, report) = status(config);
        (report["outbox"]["pending"] == 0).then_some(report)
    })
}

/// A `liandong-adapter run` child process.
pub struct AdapterProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl AdapterProcess {
    /// Starts the daemon with `config`, its stderr appended to `log`, and
    /// waits until it says it runs.
    pub fn start(config: &Path, log: &Path) -> Self {
        Self::start_with_env(config, log, &[])
    }

    /// As [`AdapterProcess::start`], with `env` added to its environment.
    pub fn start_with_env(config: &Path, log: &Path, env: &[(&str, &Path)]) -> Self {
        let before = std::fs::read_to_string(log).map(|l| l.len()).unwrap_or(0);
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the adapter log");
        let child = Command::new(binary("liandong-adapter"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("LIANDONG_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn liandong-adapter run");
        let mut process = Self {
            child: Some(child),
            log: log.to_owned(),
        };
        wait_for("the adapter runs", Duration::from_secs(60), || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text[before.min(text.len())..].contains("liandong-adapter running for") {
                return Some(());
            }
            if let Some(status) = process
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the adapter exited ({status}) before running; log:\n{text}");
            }
            None
        });
        process
    }

    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends `signal` and waits for the exit.
    pub fn stop(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("the adapter is running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
            .expect("signal the adapter");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the adapter") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the adapter did not stop on {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGKILL and hands over the child without reaping it: until
    /// the caller waits for it, the dead daemon stays a zombie whose
    /// `/proc/<pid>` still exists. Returns once the kernel shows it dead.
    pub fn kill_unreaped(&mut self) -> Child {
        let child = self.child.take().expect("the adapter is running");
        let pid = child.id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL)
            .expect("signal the adapter");
        wait_for(
            "the killed adapter is a zombie",
            Duration::from_secs(30),
            || {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // The state follows the parenthesised command name.
                let state = stat.rsplit_once(") ")?.1.chars().next()?;
                (state == 'Z').then_some(())
            },
        );
        child
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AdapterProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request to `127.0.0.1:port` (connection closed after),
/// presenting [`HTTP_TOKEN`].
pub fn http(port: u16, method: &str, path: &str, body: &str) -> Answer {
    crate::hostile::raw_request(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {HTTP_TOKEN}\r\n"
        ),
        body,
    )
}

/// One request a [`WebhookServer`] received.
#[derive(Debug, Clone)]
pub struct Hook {
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Value,
    /// The status it was answered with.
    pub answered: u16,
}

/// A webhook on 127.0.0.1 answering every POST with the current status
/// and recording it.
pub struct WebhookServer {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    status: Arc<AtomicU16>,
    hooks: Arc<Mutex<Vec<Hook>>>,
}

impl WebhookServer {
    /// Starts answering `status`.
    pub fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let status = Arc::new(AtomicU16::new(status));
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let (answer, record) = (Arc::clone(&status), Arc::clone(&hooks));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (answer, record) = (Arc::clone(&answer), Arc::clone(&record));
                std::thread::spawn(move || serve_one(stream, &answer, &record));
            }
        });
        Self { url, status, hooks }
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Everything received so far.
    pub fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().expect("hooks").clone()
    }
}

fn serve_one(stream: TcpStream, answer: &AtomicU16, record: &Mutex<Vec<Hook>>) {
    let mut reader = BufReader::new(stream);
    let mut headers = Vec::new();
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0usize);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let status = answer.load(Ordering::SeqCst);
    record.lock().expect("hooks").push(Hook {
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered: status,
    });
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// The raw 32-byte Ed25519 public key `liandong-certs init` wrote for
/// `agency` (`agencies/<id>.signing.pub`, hex).
pub fn signing_public_key(pki: &Pki, agency: &str) -> [u8; 32] {
    let text = std::fs::read_to_string(
        pki.dir
            .join("agencies")
            .join(format!("{agency}.signing.pub")),
    )
    .expect("read the public key");
    let text = text.trim();
    let mut key = [0u8; 32];
    assert_eq!(text.len(), 64, "64 hex digits");
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex");
    }
    key
}
