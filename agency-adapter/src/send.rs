//! The `send` command: read one notification in the JSON form (a file or
//! standard input), publish it, and print the gateway's receipt as one JSON
//! line.
//!
//! The input is read and parsed before the gateway is contacted, so bad
//! input never reaches the network. This module must never log or print the
//! notification's content: only its id and case reference are logged.

use std::io::{Read, Write};
use std::path::Path;

use liandong_core::json::{from_json, to_json};
use liandong_core::pb;

use crate::client::GatewayClient;
use crate::config::GatewaySettings;
use crate::error::{CommandError, InputError};

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

/// Writes `value` as one line of JSON and flushes.
pub(crate) fn write_json_line(
    out: &mut impl Write,
    value: &serde_json::Value,
) -> Result<(), CommandError> {
    let mut line = value.to_string();
    line.push('\n');
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CommandError::Output)
}
