//! Signed publishing for end-to-end tests: agencies' keys (as
//! `liandong-certs init` wrote them, or fresh ones for a rollover)
//! registered in a test bed's registry in the `signing_public_keys` form,
//! the gateway's own key published under `[gateway]`, `require_signatures`
//! switched on in a gateway config before it starts, notifications signed
//! as an agency's adapter signs them, and the gateway's audit of refused
//! publishes.
//!
//! Nothing here decides whether a signature is good: the gateway and the
//! adapter under test do.

use std::path::Path;
use std::time::Duration;

use liandong_certs::SigningKey;
use liandong_core::pb;
use liandong_core::signing;
use sqlx::Connection;

use crate::Pki;
use crate::adapter_bed::wait_for;

/// The signing key `liandong-certs init` wrote for `agency`.
pub fn agency_key(pki: &Pki, agency: &str) -> SigningKey {
    let path = pki
        .dir
        .join("agencies")
        .join(format!("{agency}.signing.pk8"));
    SigningKey::from_pkcs8_der(&std::fs::read(&path).expect("read the signing key"))
        .expect("a PKCS#8 Ed25519 key")
}

/// `n` signed by `key` as `sender` signs it: `signing_key_id` names the
/// key under `key_id_owner` (the sender, unless a test claims another
/// agency's key) and the signature covers the signing bytes for `sender`.
pub fn sign_as(
    mut n: pb::Notification,
    sender: &str,
    key: &SigningKey,
    key_id_owner: &str,
) -> pb::Notification {
    n.signing_key_id = signing::key_id(key_id_owner, &key.public_key());
    n.signature = key.sign(&signing::signing_bytes(&n, sender));
    n
}

/// `n` signed by `sender` with `key`.
pub fn sign(n: pb::Notification, sender: &str, key: &SigningKey) -> pb::Notification {
    sign_as(n, sender, key, sender)
}

/// Sets `agency`'s keys in the registry file to `keys` (hex;
/// `signing_public_keys = [...]`), replacing what it had; an empty list
/// leaves it without a key.
pub fn set_agency_keys(registry: &Path, agency: &str, keys: &[String]) {
    let text = std::fs::read_to_string(registry).expect("read the registry");
    let entry = format!("id = \"{agency}\"\n");
    let start = text.find(&entry).expect("the agency is registered") + entry.len();
    let (head, rest) = text.split_at(start);
    // Drop the key lines the entry has right after its id.
    let rest: String = {
        let mut lines = rest.split_inclusive('\n').peekable();
        while lines
            .peek()
            .is_some_and(|line| line.starts_with("signing_public_key"))
        {
            lines.next();
        }
        lines.collect()
    };
    let keys = if keys.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        format!("signing_public_keys = [{}]\n", quoted.join(", "))
    };
    std::fs::write(registry, format!("{head}{keys}{rest}")).expect("write the registry");
}

/// Registers every agency's key from the PKI (`<id>.signing.pub`), and
/// the gateway's under `[gateway]`, in the registry beside the PKI.
pub fn register_all_keys(pki: &Pki) {
    let registry = registry_of(pki);
    for id in liandong_certs::read_agency_ids(&registry).expect("agency ids") {
        set_agency_keys(&registry, &id, &[agency_key(pki, &id).public_key_hex()]);
    }
    publish_gateway_key(pki);
}

/// Publishes the gateway's public key (`gateway.signing.pub`) under
/// `[gateway]` at the top of the registry beside the PKI.
pub fn publish_gateway_key(pki: &Pki) {
    let registry = registry_of(pki);
    let key = std::fs::read_to_string(pki.dir.join("gateway.signing.pub"))
        .expect("read the gateway's public key");
    let key = key.trim();
    let text = std::fs::read_to_string(&registry).expect("read the registry");
    std::fs::write(
        &registry,
        format!("[gateway]\nsigning_public_key = \"{key}\"\n\n{text}"),
    )
    .expect("write the registry");
}

/// The registry file beside the PKI (`agencies.toml`).
pub fn registry_of(pki: &Pki) -> std::path::PathBuf {
    pki.dir
        .parent()
        .expect("the PKI has a parent directory")
        .join("agencies.toml")
}

/// Adds `require_signatures = true` to the `[signing]` table of a gateway
/// config that is not running yet.
pub fn require_signatures(config: &Path) {
    let text = std::fs::read_to_string(config).expect("read the gateway config");
    let table = "[signing]\n";
    assert!(text.contains(table), "the config has a [signing] table");
    std::fs::write(
        config,
        text.replacen(table, "[signing]\nrequire_signatures = true\n", 1),
    )
    .expect("write the gateway config");
}

/// Sends SIGHUP to the gateway and waits until `log` shows one more
/// completed reload than before.
pub fn reload(gateway: &crate::GatewayProcess, log: &Path) {
    let reloads = || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("registry and policy reloaded")
            .count()
    };
    let before = reloads();
    gateway.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the registry is reloaded", Duration::from_secs(10), || {
        (reloads() > before).then_some(())
    });
}

/// The audit log's refused publishes of `notification_id`: `(agency,
/// decision, reason)`, oldest first.
pub async fn refused_publishes(
    database_url: &str,
    notification_id: &str,
) -> Vec<(String, String, String)> {
    let mut conn = sqlx::AnyConnection::connect(database_url)
        .await
        .expect("open the gateway database");
    sqlx::query_as(
        "SELECT agency, decision, reason FROM audit_log \
         WHERE action = 'PUBLISH_REFUSED' AND notification_id = $1 ORDER BY id",
    )
    .bind(notification_id)
    .fetch_all(&mut conn)
    .await
    .expect("read the audit log")
}

/// Every reason the audit log holds, for searching it.
pub async fn audit_reasons(database_url: &str) -> Vec<String> {
    let mut conn = sqlx::AnyConnection::connect(database_url)
        .await
        .expect("open the gateway database");
    sqlx::query_scalar("SELECT reason FROM audit_log ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .expect("read the audit log")
}
