//! Readiness against a real store and real TLS files made by the dev PKI.

use std::path::Path;
use std::sync::Arc;

use liandong_certs::Authority;
use liandong_core::registry::Registry;

use super::*;
use crate::config::TlsFiles;
use crate::policy::{Policy, Rules};
use crate::routing::DeliverySettings;
use crate::store::Store;

const REGISTRY: &str = include_str!("../../../../deploy/dev/agencies.toml");

/// A gateway on a fresh SQLite store in `dir`, with TLS material whose CRL
/// is next updated in `crl_days` days and certificates valid for years.
async fn gateway(dir: &tempfile::TempDir, crl_days: i64) -> Gateway {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    let rules = Rules {
        registry: Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    };
    let gateway = Gateway::new(
        store,
        rules,
        0,
        DeliverySettings::default(),
        Arc::new(crate::supervision::GatewayKey::generate()),
    );
    let ca = Authority::new("test CA").unwrap();
    let server = ca.server(&["localhost"]).unwrap();
    let files = TlsFiles {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("gateway.pem"),
        key: dir.path().join("gateway.key"),
        crls: vec![dir.path().join("ca.crl")],
    };
    let now = time::OffsetDateTime::now_utc();
    let crl = ca
        .crl(&liandong_certs::CrlContents {
            number: 1,
            this_update: now - time::Duration::days(1),
            next_update: now + time::Duration::days(crl_days),
            revoked: Vec::new(),
        })
        .unwrap();
    std::fs::write(&files.ca, ca.cert_pem()).unwrap();
    std::fs::write(&files.crls[0], crl).unwrap();
    std::fs::write(&files.cert, &server.cert_pem).unwrap();
    std::fs::write(&files.key, &server.key_pem).unwrap();
    gateway
        .tls
        .put_in_force(crate::identity::tls::load(&files, now).unwrap());
    gateway
}

fn settings(ready_certificate_days: u32) -> OpsSettings {
    OpsSettings {
        listen: None,
        ready_certificate_days,
    }
}

#[tokio::test]
async fn a_migrated_store_with_valid_certificates_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir, 30).await;
    let problems = readiness(&gateway, &settings(1), PROBE_TIMEOUT).await;
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test]
async fn a_crl_expiring_within_the_margin_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir, 5).await;
    let problems = readiness(&gateway, &settings(7), PROBE_TIMEOUT).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("certificate: CRL of "),
        "{problems:?}"
    );
    assert!(problems[0].contains("ca.crl"), "{problems:?}");
    assert!(problems[0].contains("expires at"), "{problems:?}");
}

#[tokio::test]
async fn no_tls_configuration_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir, 30).await;
    let bare = Gateway::new(
        gateway.store.clone(),
        gateway.rules().as_ref().clone(),
        0,
        DeliverySettings::default(),
        gateway.key.clone(),
    );
    let problems = certificate_problems(&bare, 1, time::OffsetDateTime::now_utc());
    assert_eq!(problems, ["tls: no configuration in force"]);
}

#[tokio::test]
async fn a_missing_or_unknown_migration_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir, 30).await;
    let mut conn = gateway.store.read_connection().await.unwrap();
    // A migration recorded as failed, and one this binary does not know.
    let first = SQLITE_MIGRATIONS.iter().next().unwrap().version;
    sqlx::query("UPDATE _sqlx_migrations SET success = FALSE WHERE version = $1")
        .bind(first)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, X'00', 0)",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    let problems = readiness(&gateway, &settings(1), PROBE_TIMEOUT).await;
    assert_eq!(
        problems,
        [
            format!("migrations: failed: {first:04}"),
            "migrations: applied but unknown to this binary (a newer version ran): 9999".into(),
        ]
    );
}

#[test]
fn migrations_not_yet_applied_are_named() {
    let last = SQLITE_MIGRATIONS.iter().last().unwrap().version;
    let applied: Vec<(i64, bool)> = SQLITE_MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|version| *version != last)
        .map(|version| (version, true))
        .collect();
    assert_eq!(
        migration_problems(&SQLITE_MIGRATIONS, &applied),
        [format!("migrations: not applied: {last:04}")]
    );
}

#[tokio::test]
async fn a_closed_store_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir, 30).await;
    gateway.store.close().await;
    let problems = readiness(&gateway, &settings(1), PROBE_TIMEOUT).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("store: unreachable: "),
        "{problems:?}"
    );
}
