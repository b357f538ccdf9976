//! The `send` command: read one notification in the JSON form (a file or
//! standard input) and either hand it to the running daemon's outbox
//! (through its HTTP source, when the config file is a daemon config with
//! one) or publish it directly, and print the answer as one JSON line: the
//! daemon's acceptance, or the gateway's receipt.
//!
//! With a daemon config, a directly published notification is prepared as
//! the daemon would (an id assigned when it has none, `sender` set, signed
//! with the agency's key). `--direct` skips the daemon.
//!
//! The input is read and parsed before the gateway is contacted, so bad
//! input never reaches the network. This module must never log or print the
//! notification's content: only its id and case reference are logged.

use std::io::{Read, Write};
use std::path::Path;

use std::net::SocketAddr;
use std::time::Duration;

use liandong_core::json::{from_json, to_json};
use liandong_core::pb;
use liandong_core::tls::error_chain;

use crate::cli::{GatewayArgs, SendArgs};
use crate::client::GatewayClient;
use crate::commands::write_json_line;
use crate::config::GatewaySettings;
use crate::config::daemon::{DaemonConfig, is_daemon_config};
use crate::daemon::accept::{AcceptError, prepare};
use crate::daemon::source::http::{HttpToken, SOURCE_HEADER};
use crate::error::{CommandError, InputError};
use crate::signer::Signer;

#[cfg(test)]
mod tests;

/// Parses `text`, read from `origin` (a file name or `stdin`), as one
/// notification in the JSON form.
pub fn parse_notification(origin: &str, text: &str) -> Result<pb::Notification, InputError> {
    if text.trim().is_empty() {
        return Err(InputError::Empty {
            origin: origin.to_owned(),
        });
    }
    from_json(text).map_err(|source| InputError::Json {
        origin: origin.to_owned(),
        source,
    })
}

/// Reads one notification from the file `path`, or from standard input when
/// `path` is `None`.
pub fn read_notification(path: Option<&Path>) -> Result<pb::Notification, InputError> {
    let (origin, text) = match path {
        Some(path) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
                origin: origin.clone(),
                source,
            })?;
            (origin, text)
        }
        None => {
            let mut text = String::new();
            std::io::stdin()
                .lock()
                .read_to_string(&mut text)
                .map_err(|source| InputError::Read {
                    origin: "stdin".into(),
                    source,
                })?;
            ("stdin".to_owned(), text)
        }
    };
    parse_notification(&origin, &text)
}

/// Publishes `notification` and writes the receipt to `out` as one JSON
/// line, flushed.
pub async fn publish_one(
    client: &mut GatewayClient,
    notification: pb::Notification,
    out: &mut impl Write,
) -> Result<pb::PublishReceipt, CommandError> {
    let id = notification.notification_id.clone();
    let case_ref = notification.case_ref.clone();
    let receipt = client.publish(notification).await.inspect_err(|status| {
        tracing::info!(
            notification.id = %id,
            case.ref = %case_ref,
            status.code = ?status.code(),
            "publish refused"
        );
    })?;
    tracing::info!(
        notification.id = %id,
        case.ref = %case_ref,
        receipt.sequence = receipt.sequence,
        receipt.duplicate = receipt.duplicate,
        "published"
    );
    write_json_line(out, &to_json(&receipt))?;
    Ok(receipt)
}

/// The `send` command: reads the notification from `file` (standard input
/// when `None`), connects with `settings`, publishes, and prints the
/// receipt on standard output.
pub async fn send(settings: &GatewaySettings, file: Option<&Path>) -> Result<(), CommandError> {
    let notification = read_notification(file)?;
    let mut client = GatewayClient::connect(settings).await?;
    let mut stdout = std::io::stdout();
    publish_one(&mut client, notification, &mut stdout).await?;
    Ok(())
}

/// How long `send` waits for the daemon's answer.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(30);

/// The `send` command as the command line describes it: to the daemon
/// when the `--config` file names its HTTP source and it listens, else
/// directly to the gateway.
pub async fn send_command(gateway: &GatewayArgs, args: &SendArgs) -> Result<(), CommandError> {
    let origin = args
        .input()
        .map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
    let notification = read_notification(args.input())?;
    let daemon = match &gateway.config {
        Some(path) if is_daemon_config(path)? => Some(DaemonConfig::load(path, gateway.flags())?),
        _ => None,
    };
    let mut stdout = std::io::stdout();
    if let Some(source) = daemon
        .as_ref()
        .filter(|_| !args.direct)
        .and_then(DaemonConfig::http_source)
    {
        let addr = source.listen;
        let token = HttpToken::load(&source.token_file)?;
        if let Some(answer) = hand_over(addr, &token, &notification).await? {
            write_json_line(&mut stdout, &answer)?;
            return Ok(());
        }
        tracing::info!(http.listen = %addr, "no daemon listens; publishing directly");
    }
    let settings = gateway.settings()?;
    let notification = match &daemon {
        Some(config) => {
            let signer = Signer::load(config.agency.clone(), &config.signing_key)?;
            prepare(&signer, notification)
                .map_err(|e| match e {
                    AcceptError::Field(source) => {
                        CommandError::Input(InputError::Field { origin, source })
                    }
                    other => CommandError::Handoff {
                        status: 400,
                        message: other.to_string(),
                    },
                })?
                .signed
        }
        None => notification,
    };
    let mut client = GatewayClient::connect(&settings).await?;
    publish_one(&mut client, notification, &mut stdout).await?;
    Ok(())
}

/// Hands `notification` to the daemon's HTTP source at `addr` (over
/// loopback when it listens on every address), presenting `token`: its
/// acceptance answer, or `None` when nothing listens there.
pub async fn hand_over(
    addr: SocketAddr,
    token: &HttpToken,
    notification: &pb::Notification,
) -> Result<Option<serde_json::Value>, CommandError> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let url = format!("http://{addr}/v1/notifications");
    let failed = |reason: String| CommandError::Daemon {
        url: url.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(HANDOFF_TIMEOUT)
        .build()
        .map_err(|e| failed(error_chain(&e)))?;
    let response = match client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SOURCE_HEADER, "send")
        .bearer_auth(token.expose())
        .body(to_json(notification).to_string())
        .send()
        .await
    {
        Ok(response) => response,
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => return Err(failed(error_chain(&e.without_url()))),
    };
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| {
        failed(format!(
            "answered {status}, then: {}",
            error_chain(&e.without_url())
        ))
    })?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
        failed(format!(
            "answered {status} without a JSON body (is this the adapter's HTTP source?)"
        ))
    })?;
    if status.is_success() {
        return Ok(Some(body));
    }
    let message = body["error"]["message"]
        .as_str()
        .map_or_else(|| format!("answered {status}"), str::to_owned);
    Err(CommandError::Handoff {
        status: status.as_u16(),
        message,
    })
}
