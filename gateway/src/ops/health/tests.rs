//! Readiness against a real store and real TLS files made by the dev PKI.

use std::path::Path;
use std::sync::Arc;

use liandong_certs::Authority;
use liandong_core::registry::Registry;

use super::*;
use crate::config::TlsFiles;
use crate::policy::{Policy, Rules};
use crate::routing::DeliverySettings;
use crate::store::{Backend, Store};

const REGISTRY: &str = include_str!("../../../../deploy/dev/agencies.toml");

/// A gateway on a fresh SQLite store in `dir`, with TLS material whose CRL
/// is next updated in `crl_days` days and certificates valid for years.
async fn gateway(dir: &tempfile::TempDir, crl_days: i64) -> Gateway {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    gateway_on(&url, dir, crl_days).await
}

/// [`gateway`] on the store at `url`, its TLS files in `dir`.
async fn gateway_on(url: &str, dir: &tempfile::TempDir, crl_days: i64) -> Gateway {
    let store = Store::connect(url, 2).await.unwrap();
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
    let ready = readiness(&gateway, &settings(1), PROBE_TIMEOUT).await;
    assert_eq!(ready, Readiness::default());
}

#[tokio::test]
async fn a_crl_expiring_within_the_margin_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir, 5).await;
    let problems = readiness(&gateway, &settings(7), PROBE_TIMEOUT)
        .await
        .problems;
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
async fn a_failed_migration_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir, 30).await;
    let mut conn = gateway.store.read_connection().await.unwrap();
    let first = crate::store::migrator(Backend::Sqlite)
        .iter()
        .next()
        .unwrap()
        .version;
    sqlx::query("UPDATE _sqlx_migrations SET success = FALSE WHERE version = $1")
        .bind(first)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let ready = readiness(&gateway, &settings(1), PROBE_TIMEOUT).await;
    assert_eq!(ready.problems, [format!("migrations: failed: {first:04}")]);
    assert!(ready.notes.is_empty(), "{ready:?}");
}

/// A store migrated by the next version (a rolling upgrade: another
/// replica already runs it) holds a migration this binary does not know:
/// the gateway stays ready and says so, on both backends.
#[tokio::test]
async fn a_store_ahead_by_an_unknown_migration_is_ready_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}",
        dir.path().join("ahead.db").display()
    )];
    urls.extend(crate::store::tests::postgres_schema_url().await);
    for url in urls {
        let gateway = gateway_on(&url, &dir, 30).await;
        crate::store::tests::apply_future_migration(&gateway.store, 9999).await;
        let ready = readiness(&gateway, &settings(1), PROBE_TIMEOUT).await;
        assert!(ready.problems.is_empty(), "{url}: {ready:?}");
        assert_eq!(
            ready.notes,
            [
                "migrations: applied by a newer version, unknown to this binary: 9999 (from the future); \
              serving on it (schema changes are compatible across one version): upgrade this gateway"
            ],
            "{url}"
        );
        gateway.store.close().await;
    }
}

#[test]
fn migrations_not_yet_applied_are_named() {
    let migrator = crate::store::migrator(Backend::Sqlite);
    let last = migrator.iter().last().unwrap().version;
    let applied: Vec<AppliedMigration> = migrator
        .iter()
        .filter(|m| m.version != last)
        .map(|m| AppliedMigration {
            version: m.version,
            description: m.description.to_string(),
            success: true,
            checksum: m.checksum.to_vec(),
        })
        .collect();
    assert_eq!(
        migration_problems(&migrator, &applied),
        (vec![format!("migrations: not applied: {last:04}")], vec![])
    );
}

#[tokio::test]
async fn a_closed_store_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir, 30).await;
    gateway.store.close().await;
    let problems = readiness(&gateway, &settings(1), PROBE_TIMEOUT)
        .await
        .problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("store: unreachable: "),
        "{problems:?}"
    );
}
