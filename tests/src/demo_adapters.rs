//! The agencies' side of `liandong-demo`: one real `liandong-adapter run`
//! daemon per agency, each with its own config file written into the demo's
//! directory, and the small amount of "case system" each needs — writing
//! drop files (write, then rename), posting to the local HTTP endpoint and
//! reading the JSON files the folder sink writes.
//!
//! Every daemon is a child process killed and reaped when its
//! [`AdapterDaemon`] is dropped, so no exit path of the demo leaves one
//! running (or writing into a directory being removed); the normal end is
//! [`AdapterDaemon::stop`] (SIGTERM, then the exit status).
//!
//! Everything waits against a deadline and says what it was waiting for
//! when the deadline passes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use liandong_core::json::{from_json, to_json};
use liandong_core::pb;
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// How often files and endpoints are polled.
const POLL: Duration = Duration::from_millis(50);

/// Longest time one request to an adapter's HTTP source may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the daemon writes to standard error once it runs.
const RUNNING: &str = "liandong-adapter running for ";

/// How an agency's case system hands notifications to its adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// It publishes nothing: no `[[source]]`.
    None,
    /// A drop folder (`[[source]] kind = "folder"`).
    DropFolder,
    /// The loopback HTTP endpoint (`[[source]] kind = "http"`), on a port
    /// the daemon picks.
    Http,
}

/// Where one agency's adapter keeps its files, all in the demo's directory.
#[derive(Debug, Clone)]
pub struct AdapterFiles {
    /// `adapter-<agency>.toml`, beside `pki/` (its paths are relative to it).
    pub config: PathBuf,
    /// `adapters/<agency>/`: everything else.
    pub root: PathBuf,
    /// The daemon's standard error.
    pub log: PathBuf,
    /// The drop folder (with `done/` and `rejected/` inside).
    pub outgoing: PathBuf,
    /// The folder sink of the subscription: one JSON file per delivery.
    pub inbox: PathBuf,
    /// The folder sink of dead letters.
    pub dead_letters: PathBuf,
    /// The HTTP source's token file (owner-only).
    pub token: PathBuf,
}

impl AdapterFiles {
    /// The files of `agency`'s adapter under `dir`.
    pub fn new(dir: &Path, agency: &str) -> Self {
        let root = dir.join("adapters").join(agency);
        Self {
            config: dir.join(format!("adapter-{agency}.toml")),
            log: root.join("adapter.log"),
            outgoing: root.join("outgoing"),
            inbox: root.join("inbox"),
            dead_letters: root.join("dead-letters"),
            token: root.join("http.token"),
            root,
        }
    }
}

/// The daemon config of `agency` (`docs/ADAPTER.md`), to be written as
/// `adapter-<agency>.toml` in the directory holding the dev PKI: the
/// agency's certificate and signing key, an outbox, the `source`, and one
/// durable subscription named `subscription`, from the beginning, to a
/// folder sink, every delivery verified against the registry's keys
/// (`[verify]`; one that fails goes to `adapters/<agency>/rejected`, never
/// to the sink). Dead letters go to a folder too.
pub fn config(agency: &str, gateway_url: &str, source: Source, subscription: &str) -> String {
    let mut text = format!(
        "# liandong-adapter daemon of {agency}, written by liandong-demo.\n\
         # Every field is documented in docs/ADAPTER.md; relative paths are\n\
         # relative to this file's directory.\n\
         agency = \"{agency}\"\n\
         signing_key = \"pki/agencies/{agency}.signing.pk8\"\n\
         \n\
         [gateway]\n\
         url = \"{gateway_url}\"\n\
         ca = \"pki/ca.crt\"\n\
         cert = \"pki/agencies/{agency}.crt\"\n\
         key = \"pki/agencies/{agency}.key\"\n\
         \n\
         [outbox]\n\
         path = \"adapters/{agency}/state.db\"\n\
         retry_initial_ms = 100\n\
         retry_max_ms = 2000\n"
    );
    match source {
        Source::None => {}
        Source::DropFolder => text.push_str(&format!(
            "\n[[source]]\n\
             kind = \"folder\"\n\
             path = \"adapters/{agency}/outgoing\"\n\
             poll_interval_ms = 100\n"
        )),
        Source::Http => text.push_str(&format!(
            "\n[[source]]\n\
             kind = \"http\"\n\
             listen = \"127.0.0.1:0\"\n\
             token_file = \"adapters/{agency}/http.token\"\n"
        )),
    }
    text.push_str(&format!(
        "\n[[subscription]]\n\
         name = \"{subscription}\"\n\
         start = \"beginning\"\n\
         sink = {{ kind = \"folder\", path = \"adapters/{agency}/inbox\" }}\n\
         rejected = \"adapters/{agency}/rejected\"\n\
         \n\
         [dead_letter]\n\
         sink = {{ kind = \"folder\", path = \"adapters/{agency}/dead-letters\" }}\n\
         \n\
         [verify]\n\
         registry = \"agencies.toml\"\n\
         on_failure = \"reject\"\n"
    ));
    text
}

/// A running `liandong-adapter run` daemon; killed (and reaped) if
/// dropped before it was stopped.
#[derive(Debug)]
pub struct AdapterDaemon {
    agency: String,
    source: Source,
    subscription: String,
    files: AdapterFiles,
    http: Option<SocketAddr>,
    /// The HTTP source's token.
    token: String,
    child: Option<Child>,
}

impl AdapterDaemon {
    /// Writes `agency`'s config into `dir` (see [`config`]), starts
    /// `binary run --config FILE` with its standard error in the agency's
    /// log, and waits until it says it runs (and on which port its HTTP
    /// source listens).
    pub async fn start(
        binary: &Path,
        dir: &Path,
        agency: &str,
        gateway_url: &str,
        source: Source,
        subscription: &str,
        deadline: Instant,
    ) -> anyhow::Result<Self> {
        let files = AdapterFiles::new(dir, agency);
        std::fs::create_dir_all(&files.root)
            .with_context(|| format!("creating {}", files.root.display()))?;
        std::fs::write(
            &files.config,
            config(agency, gateway_url, source, subscription),
        )
        .with_context(|| format!("writing {}", files.config.display()))?;
        let token = write_token(&files.token)?;
        let log = std::fs::File::create(&files.log)
            .with_context(|| format!("creating {}", files.log.display()))?;
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&files.config)
            .env("LIANDONG_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut daemon = Self {
            agency: agency.to_owned(),
            source,
            subscription: subscription.to_owned(),
            files,
            http: None,
            token,
            child: Some(child),
        };
        let line = loop {
            let log = std::fs::read_to_string(&daemon.files.log).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.starts_with(RUNNING)) {
                break line.to_owned();
            }
            if let Some(status) = daemon.try_wait()? {
                bail!(
                    "{agency}'s adapter exited ({status}) before it ran: {}",
                    last_lines(&log, 3)
                );
            }
            if Instant::now() >= deadline {
                bail!(overdue(&format!("{agency}'s adapter runs")));
            }
            tokio::time::sleep(POLL).await;
        };
        if source == Source::Http {
            let addr = line
                .split_once("HTTP source on http://")
                .and_then(|(_, rest)| rest.split(')').next())
                .and_then(|addr| addr.parse().ok())
                .with_context(|| format!("{agency}'s adapter names no HTTP address: {line}"))?;
            daemon.http = Some(addr);
        }
        Ok(daemon)
    }

    /// The agency it speaks for.
    pub fn agency(&self) -> &str {
        &self.agency
    }

    /// Its files.
    pub fn files(&self) -> &AdapterFiles {
        &self.files
    }

    /// How its case system hands it notifications.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Where its HTTP source listens, if it has one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The child's process id (0 once it was reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status, if the child has exited (it is then reaped).
    fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let child = self
            .child
            .as_mut()
            .context("the adapter was already reaped")?;
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Hands `notification` to the daemon the way its case system does —
    /// as the drop file `<name>.json` (written as `<name>.json.tmp`, then
    /// renamed), or `POST /v1/notifications` (expecting `202`) — and waits
    /// until the gateway stored it. Returns its sequence and how it was
    /// handed over.
    pub async fn publish(
        &self,
        name: &str,
        notification: &pb::Notification,
        deadline: Instant,
    ) -> anyhow::Result<(u64, String)> {
        let id = &notification.notification_id;
        let json = to_json(notification).to_string();
        match (self.source, self.http) {
            (Source::DropFolder, _) => {
                let file = format!("{name}.json");
                let temporary = self.files.outgoing.join(format!("{file}.tmp"));
                std::fs::write(&temporary, &json)
                    .with_context(|| format!("writing {}", temporary.display()))?;
                std::fs::rename(&temporary, self.files.outgoing.join(&file))
                    .with_context(|| format!("renaming {} to {file}", temporary.display()))?;
                let sequence = self.wait_own_delivery(&file, id, deadline).await?;
                Ok((sequence, format!("drop file {file}")))
            }
            (Source::Http, Some(addr)) => {
                let (status, body) =
                    http(addr, &self.token, "POST", "/v1/notifications", &json).await?;
                if status != 202 {
                    bail!(
                        "{}'s adapter refused {id}: HTTP {status}: {body}",
                        self.agency
                    );
                }
                let sequence = self.wait_sent(addr, id, deadline).await?;
                Ok((sequence, format!("POST /v1/notifications: {status}")))
            }
            _ => bail!("{}'s adapter has no source to publish with", self.agency),
        }
    }

    /// Polls `GET /v1/notifications/{id}` until it was sent (its sequence)
    /// or refused for good.
    async fn wait_sent(
        &self,
        addr: SocketAddr,
        id: &str,
        deadline: Instant,
    ) -> anyhow::Result<u64> {
        loop {
            let (status, body) = http(
                addr,
                &self.token,
                "GET",
                &format!("/v1/notifications/{id}"),
                "",
            )
            .await?;
            if status != 200 {
                bail!(
                    "{}'s adapter does not know {id}: HTTP {status}: {body}",
                    self.agency
                );
            }
            match body["state"].as_str() {
                Some("sent") => {
                    return body["sequence"]
                        .as_u64()
                        .with_context(|| format!("{id} was sent without a sequence: {body}"));
                }
                Some("dead_letter") => bail!(
                    "the gateway refused {id} from {}: {}: {}",
                    self.agency,
                    body["code"].as_str().unwrap_or("?"),
                    body["reason"].as_str().unwrap_or("?")
                ),
                _ => {}
            }
            if Instant::now() >= deadline {
                bail!(overdue(&format!("{}'s adapter has sent {id}", self.agency)));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// For a drop file: waits until the agency's own subscription delivers
    /// `id` back (the sender always receives its own notification, with
    /// the sequence the gateway gave it), failing on a rejected file or a
    /// dead letter.
    async fn wait_own_delivery(
        &self,
        file: &str,
        id: &str,
        deadline: Instant,
    ) -> anyhow::Result<u64> {
        let error_file = self
            .files
            .outgoing
            .join("rejected")
            .join(format!("{file}.error"));
        loop {
            if let Ok(error) = std::fs::read_to_string(&error_file) {
                bail!(
                    "{}'s adapter rejected the drop file: {}",
                    self.agency,
                    error.trim()
                );
            }
            for letter in read_envelopes(&self.files.dead_letters, "dead-letter-")? {
                let dead = &letter["dead_letter"];
                if dead["notification_id"] == id {
                    bail!(
                        "the gateway refused {id} from {}: {}: {}",
                        self.agency,
                        dead["code"].as_str().unwrap_or("?"),
                        dead["reason"].as_str().unwrap_or("?")
                    );
                }
            }
            let own = self.deliveries()?.into_iter().find(|d| {
                d.sender == self.agency
                    && d.notification
                        .as_ref()
                        .is_some_and(|n| n.notification_id == id)
            });
            if let Some(delivery) = own {
                return Ok(delivery.sequence);
            }
            if Instant::now() >= deadline {
                bail!(overdue(&format!(
                    "{}'s adapter took {file} and the gateway stored it",
                    self.agency
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// True once the sink has written the delivery with `sequence`.
    pub fn has_delivery(&self, sequence: u64) -> bool {
        self.files
            .inbox
            .join(format!("{}-{sequence:020}.json", self.subscription))
            .exists()
    }

    /// Every delivery its folder sink has written, in sequence order.
    pub fn deliveries(&self) -> anyhow::Result<Vec<pb::Delivery>> {
        let mut deliveries = Vec::new();
        for envelope in read_envelopes(&self.files.inbox, &format!("{}-", self.subscription))? {
            if envelope["kind"] != "delivery" {
                bail!(
                    "an envelope of kind {} in a delivery file",
                    envelope["kind"]
                );
            }
            let delivery: pb::Delivery = from_json(&envelope["delivery"].to_string())
                .with_context(|| format!("a delivery file in {}", self.files.inbox.display()))?;
            deliveries.push(delivery);
        }
        deliveries.sort_by_key(|d| d.sequence);
        Ok(deliveries)
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status (the daemon
    /// is killed if it does not stop in time).
    pub async fn stop(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self.pid();
        if pid == 0 {
            bail!("{}'s adapter was already reaped", self.agency);
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM)
            .with_context(|| format!("signalling {}'s adapter", self.agency))?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                // Dropping it kills it.
                bail!(
                    "{}'s adapter was still running {limit:?} after SIGTERM",
                    self.agency
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for AdapterDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The message of a wait that ran into the deadline.
pub fn overdue(what: &str) -> String {
    format!("the demo's deadline passed while waiting until {what}")
}

/// The JSON files in `folder` whose names start with `prefix` (not hidden,
/// not temporary), in name order. A missing folder has none.
fn read_envelopes(folder: &Path, prefix: &str) -> anyhow::Result<Vec<Value>> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix) && name.ends_with(".json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let path = folder.join(&name);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        })
        .collect()
}

/// Writes a fresh random token to `path`, readable by its owner only, as
/// `docs/ADAPTER.md` says to, and returns it.
fn write_token(path: &Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("reading /dev/urandom")?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(path, format!("{token}\n"))
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// One HTTP/1.1 request to an adapter's loopback endpoint (connection
/// closed after), with its token: the status and the JSON body (`Null` if
/// not JSON).
async fn http(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, Value)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {HTTP_TIMEOUT:?}"))
        .and_then(|answer| answer)
        .with_context(|| format!("{method} http://{addr}{path}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} http://{addr}{path}: not an HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} http://{addr}{path}: no status line"))?;
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// The last `n` non-empty lines of `text`, joined with " | ".
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_config_is_a_valid_daemon_config() {
        for source in [Source::None, Source::DropFolder, Source::Http] {
            let text = config(
                "cz-eeb-xiangyuan",
                "https://127.0.0.1:7443",
                source,
                "demo-inbox",
            );
            let file = Path::new("/demo/adapter-cz-eeb-xiangyuan.toml");
            let parsed = liandong_adapter::DaemonConfig::parse(file, &text, Default::default())
                .unwrap_or_else(|e| panic!("{source:?}: {e}\n{text}"));
            assert_eq!(parsed.agency.as_str(), "cz-eeb-xiangyuan");
            assert_eq!(
                parsed.signing_key,
                Path::new("/demo/pki/agencies/cz-eeb-xiangyuan.signing.pk8")
            );
            assert_eq!(parsed.subscriptions.len(), 1);
            assert_eq!(
                parsed.sources.len(),
                usize::from(source != Source::None),
                "{source:?}"
            );
        }
    }
}
