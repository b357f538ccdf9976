use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use std::path::PathBuf;

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Service, ServiceExt};

use liandong_certs::{Authority, ClientSpec};
use liandong_core::registry::Registry;

use super::*;
use crate::config::TlsFiles;

const REGISTRY: &str = include_str!("../../../deploy/dev/agencies.toml");

fn registry() -> Registry {
    Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap()
}

fn peer(uris: &[&str]) -> PeerIdentity {
    PeerIdentity {
        remote_addr: SocketAddr::from(([127, 0, 0, 1], 4000)),
        uris: uris.iter().map(|uri| (*uri).to_owned()).collect(),
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[test]
fn only_one_registered_san_uri_makes_a_principal() {
    let registry = registry();
    let principal = authenticate(Some(&peer(&["urn:liandong:agency:cz-psb"])), &registry).unwrap();
    assert_eq!(principal.agency.id.as_str(), "cz-psb");
    assert_eq!(
        authenticate(None, &registry).unwrap_err(),
        IdentityError::NoPeer
    );
    assert_eq!(
        authenticate(Some(&peer(&[])), &registry).unwrap_err(),
        IdentityError::NotOneUri
    );
    assert_eq!(
        authenticate(
            Some(&peer(&[
                "urn:liandong:agency:cz-psb",
                "urn:liandong:agency:cz-eeb"
            ])),
            &registry
        )
        .unwrap_err(),
        IdentityError::NotOneUri,
        "two identities in one certificate are refused"
    );
    assert_eq!(
        authenticate(Some(&peer(&["urn:liandong:agency:ghost"])), &registry).unwrap_err(),
        IdentityError::NotRegistered
    );
}

#[test]
fn a_refused_caller_is_named_by_what_it_presented() {
    let registry = registry();
    let two = Caller::resolve(Some(&peer(&["urn:a", "urn:b"])), &registry);
    assert_eq!(two.audit_name(), "urn:a urn:b");
    assert!(matches!(
        two,
        Caller::Refused {
            error: IdentityError::NotOneUri,
            ..
        }
    ));
    assert_eq!(
        Caller::resolve(None, &registry).audit_name(),
        "<no identity>"
    );
    assert_eq!(
        Caller::resolve(Some(&peer(&["urn:liandong:agency:cz-eeb"])), &registry).audit_name(),
        "cz-eeb"
    );
}

#[test]
fn a_request_that_skipped_resolution_has_no_caller() {
    let caller = Caller::of(&http::Extensions::new());
    assert!(matches!(
        caller,
        Caller::Refused {
            error: IdentityError::NoPeer,
            ..
        }
    ));
}

#[test]
fn san_uris_are_read_from_the_certificate() {
    let ca = Authority::new("test CA").unwrap();
    let cert = ca.agency("cz-psb").unwrap();
    assert_eq!(
        san_uris(der(&cert.cert_pem).as_ref()),
        ["urn:liandong:agency:cz-psb"]
    );
    let mut spec = ClientSpec::agency("cz-psb");
    spec.uris = Vec::new();
    let without = ca.client(&spec).unwrap();
    assert!(san_uris(der(&without.cert_pem).as_ref()).is_empty());
    assert!(san_uris(b"not a certificate").is_empty());
}

#[tokio::test]
async fn every_request_gets_its_caller_resolved_before_the_handler() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = crate::store::Store::connect(&url, 1).await.unwrap();
    let rules = crate::policy::Rules {
        registry: registry(),
        policy: crate::policy::Policy::default_policy(),
    };
    let gateway = Arc::new(crate::Gateway::new(
        store,
        rules,
        0,
        crate::routing::DeliverySettings::default(),
        Arc::new(crate::supervision::GatewayKey::generate()),
    ));
    let handler = tower::service_fn(|request: http::Request<()>| async move {
        let mut response = http::Response::new(tonic::body::Body::empty());
        response
            .extensions_mut()
            .insert(Caller::of(request.extensions()).audit_name());
        Ok::<_, std::convert::Infallible>(response)
    });
    let mut service = ResolveCaller::new(handler, gateway);
    let mut request = http::Request::new(());
    request
        .extensions_mut()
        .insert(peer(&["urn:liandong:agency:cz-psb"]));
    let seen = service.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(seen.extensions().get::<String>().unwrap(), "cz-psb");
    let anonymous = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(
        anonymous.extensions().get::<String>().unwrap(),
        "<no identity>"
    );
}

/// The gateway's TLS files, made by the dev PKI, and the CA behind them.
fn tls_files(dir: &Path) -> (TlsFiles, Authority) {
    let ca = Authority::new("test CA").unwrap();
    let server = ca.server(&["localhost"]).unwrap();
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("gateway.pem"),
        key: dir.join("gateway.key"),
        crls: vec![dir.join("ca.crl")],
    };
    std::fs::write(&files.ca, ca.cert_pem()).unwrap();
    std::fs::write(
        &files.crls[0],
        liandong_certs::initial_crl(&ca, 30).unwrap(),
    )
    .unwrap();
    std::fs::write(&files.cert, &server.cert_pem).unwrap();
    std::fs::write(&files.key, &server.key_pem).unwrap();
    (files, ca)
}

fn client_config(
    ca: &Authority,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    client_config_with(ca, versions, &ca.agency("cz-psb").unwrap())
}

fn client_config_with(
    ca: &Authority,
    versions: &[&'static rustls::SupportedProtocolVersion],
    agency: &liandong_certs::CertifiedKey,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(&ca.cert_pem())).unwrap();
    let key = PrivateKeyDer::from_pem_slice(agency.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![der(&agency.cert_pem)], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Runs a handshake between the gateway's configuration and `client` over
/// an in-memory pipe; the server's result is returned.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> std::io::Result<Vec<String>> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let connector = tokio_rustls::TlsConnector::from(client);
    let client = tokio::spawn(async move {
        let name = ServerName::try_from("localhost").unwrap();
        if let Ok(mut stream) = connector.connect(name, client_io).await {
            let _ = stream.write_all(b"x").await;
            let _ = stream.flush().await;
            // Open until the server is done with the connection.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }
    });
    let accepted = tokio_rustls::TlsAcceptor::from(server)
        .accept(server_io)
        .await;
    let result = match accepted {
        Ok(mut stream) => {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await?;
            let (_, connection) = stream.get_ref();
            assert_eq!(connection.alpn_protocol(), Some(&b"h2"[..]));
            assert_eq!(
                connection.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_3)
            );
            Ok(connection
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|leaf| san_uris(leaf.as_ref()))
                .unwrap_or_default())
        }
        Err(error) => Err(error),
    };
    client.abort();
    result
}

#[tokio::test]
async fn the_gateway_speaks_tls_1_3_with_a_verified_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = tls_files(dir.path());
    let server = server_config(&files).unwrap();
    let uris = handshake(server, client_config(&ca, &[&rustls::version::TLS13]))
        .await
        .unwrap();
    assert_eq!(uris, ["urn:liandong:agency:cz-psb"]);
}

#[tokio::test]
async fn a_tls_1_2_client_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = tls_files(dir.path());
    let server = server_config(&files).unwrap();
    let refused = handshake(server, client_config(&ca, &[&rustls::version::TLS12])).await;
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn unusable_tls_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = tls_files(dir.path());
    files.key = dir.path().join("missing.key");
    match server_config(&files) {
        Err(TlsSetupError::File { path, .. }) => assert_eq!(path, files.key),
        other => panic!("expected a file error, got {other:?}"),
    }
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    files.ca = dir.path().join("empty.pem");
    assert!(matches!(
        server_config(&files),
        Err(TlsSetupError::File { .. })
    ));
}

fn crl_der(
    ca: &Authority,
    contents: &liandong_certs::CrlContents,
) -> CertificateRevocationListDer<'static> {
    CertificateRevocationListDer::from_pem_slice(ca.crl(contents).unwrap().as_bytes()).unwrap()
}

fn contents(next_update_days: i64) -> liandong_certs::CrlContents {
    let now = time::OffsetDateTime::now_utc();
    liandong_certs::CrlContents {
        number: 1,
        this_update: now - time::Duration::days(40),
        next_update: now + time::Duration::days(next_update_days),
        revoked: Vec::new(),
    }
}

#[test]
fn every_ca_needs_a_current_crl_it_signed() {
    let now = time::OffsetDateTime::now_utc();
    let ca_file = Path::new("ca.pem");
    let first = Authority::new("first CA").unwrap();
    let second = Authority::new("second CA").unwrap();
    let cas = [der(&first.cert_pem()), der(&second.cert_pem())];
    let good = |ca: &Authority, file: &str| (PathBuf::from(file), crl_der(ca, &contents(30)));

    let expiries = tls::check_crl_coverage(
        ca_file,
        &cas,
        &[good(&first, "first.crl"), good(&second, "second.crl")],
        now,
    )
    .unwrap();
    assert_eq!(expiries.len(), 2);
    assert!(expiries[0].what.contains("first CA"), "{expiries:?}");

    // The second CA has no CRL: refused, naming it.
    let error =
        tls::check_crl_coverage(ca_file, &cas, &[good(&first, "first.crl")], now).unwrap_err();
    assert!(matches!(error, TlsSetupError::NoCrl { .. }), "{error:?}");
    assert!(error.to_string().starts_with("no CRL for CA "), "{error}");
    assert!(error.to_string().contains("second CA"), "{error}");

    // An expired CRL: refused, naming the file and the date.
    let expired = (PathBuf::from("old.crl"), crl_der(&second, &contents(-1)));
    let error = tls::check_crl_coverage(ca_file, &cas, &[good(&first, "first.crl"), expired], now)
        .unwrap_err();
    assert!(
        error.to_string().starts_with("CRL old.crl expired at "),
        "{error}"
    );

    // A CRL that names the second CA as issuer but another key signed it.
    let impostor = Authority::new("second CA").unwrap();
    let forged = (
        PathBuf::from("forged.crl"),
        crl_der(&impostor, &contents(30)),
    );
    let error = tls::check_crl_coverage(ca_file, &cas, &[good(&first, "first.crl"), forged], now)
        .unwrap_err();
    assert!(
        matches!(error, TlsSetupError::CrlSignature { .. }),
        "{error:?}"
    );

    // Garbage is not a CRL.
    let garbage = (
        PathBuf::from("junk.crl"),
        CertificateRevocationListDer::from(b"junk".to_vec()),
    );
    assert!(matches!(
        tls::check_crl_coverage(ca_file, &cas, &[garbage], now),
        Err(TlsSetupError::File { .. })
    ));
}

#[test]
fn a_configuration_without_crls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = tls_files(dir.path());
    files.crls.clear();
    let error = server_config(&files).unwrap_err();
    assert!(matches!(error, TlsSetupError::NoCrl { .. }), "{error:?}");
}

#[test]
fn a_der_crl_file_is_read_too() {
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = tls_files(dir.path());
    std::fs::write(&files.crls[0], crl_der(&ca, &contents(30)).as_ref()).unwrap();
    assert!(server_config(&files).is_ok());
}

#[test]
fn client_auth_usage_is_required() {
    let ca = Authority::new("test CA").unwrap();
    let good = ca.agency("cz-psb").unwrap();
    assert_eq!(
        tls::check_client_auth_usage(der(&good.cert_pem).as_ref()),
        Ok(())
    );
    let mut spec = ClientSpec::agency("cz-psb");
    spec.usage = liandong_certs::KeyUsage::ServerOnly;
    let server_only = ca.client(&spec).unwrap();
    assert_eq!(
        tls::check_client_auth_usage(der(&server_only.cert_pem).as_ref()),
        Err(tls::UsageError::NotClientAuth)
    );
    spec.usage = liandong_certs::KeyUsage::NoExtendedKeyUsage;
    let none = ca.client(&spec).unwrap();
    assert_eq!(
        tls::check_client_auth_usage(der(&none.cert_pem).as_ref()),
        Err(tls::UsageError::NoExtendedKeyUsage)
    );
    assert_eq!(
        tls::check_client_auth_usage(b"junk"),
        Err(tls::UsageError::Unparseable)
    );
}

#[tokio::test]
async fn a_certificate_without_extended_key_usage_fails_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = tls_files(dir.path());
    let server = server_config(&files).unwrap();
    let mut spec = ClientSpec::agency("cz-psb");
    spec.usage = liandong_certs::KeyUsage::NoExtendedKeyUsage;
    let cert = ca.client(&spec).unwrap();
    let refused = handshake(
        server,
        client_config_with(&ca, &[&rustls::version::TLS13], &cert),
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn a_revoked_certificate_fails_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = tls_files(dir.path());
    let revoked = ca.agency("cz-psb").unwrap();
    let serial = {
        let leaf = der(&revoked.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
        cert.raw_serial().to_vec()
    };
    let mut list = contents(30);
    list.revoked.push(liandong_certs::Revocation {
        serial,
        revoked_at: time::OffsetDateTime::now_utc(),
        reason: None,
    });
    std::fs::write(&files.crls[0], ca.crl(&list).unwrap()).unwrap();
    let server = server_config(&files).unwrap();
    let refused = handshake(
        server.clone(),
        client_config_with(&ca, &[&rustls::version::TLS13], &revoked),
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    // Another certificate of the same CA still passes.
    let other = handshake(server, client_config(&ca, &[&rustls::version::TLS13])).await;
    assert!(other.is_ok(), "{other:?}");
}

#[test]
fn session_resumption_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = tls_files(dir.path());
    let config = server_config(&files).unwrap();
    assert_eq!(config.send_tls13_tickets, 0);
    assert!(!config.ticketer.enabled());
    // The session cache stores nothing.
    assert!(
        !config
            .session_storage
            .put(b"id".to_vec(), b"state".to_vec())
    );
    assert!(config.session_storage.get(b"id").is_none());
}

#[test]
fn live_connections_are_capped_per_identity_and_released_on_drop() {
    let live = LiveConnections::default();
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    let first = live.register(addr, "urn:a", &[], 2).unwrap();
    let _second = live.register(addr, "urn:a", &[], 2).unwrap();
    assert_eq!(live.register(addr, "urn:a", &[], 2).unwrap_err().cap, 2);
    let _other = live.register(addr, "urn:b", &[], 2).unwrap();
    drop(first);
    assert_eq!(live.len(), 2);
    assert!(live.register(addr, "urn:a", &[], 2).is_ok());
}

#[tokio::test]
async fn a_disabled_agency_is_refused_before_any_handler_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = crate::store::Store::connect(&url, 1).await.unwrap();
    let rules = crate::policy::Rules {
        registry: registry(),
        policy: crate::policy::Policy::default_policy(),
    };
    let gateway = Arc::new(crate::Gateway::new(
        store,
        rules,
        0,
        crate::routing::DeliverySettings::default(),
        Arc::new(crate::supervision::GatewayKey::generate()),
    ));
    gateway.put_agency_state_in_force(
        "cz-psb",
        Some(crate::store::agency_state::DisabledAgency {
            agency: "cz-psb".into(),
            reason: "audit of its systems".into(),
            disabled_by: "cz-ops".into(),
            disabled_at: 0,
        }),
    );
    let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = handled.clone();
    let handler = tower::service_fn(move |_request: http::Request<()>| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty())) }
    });
    let mut service = ResolveCaller::new(handler, gateway.clone());
    let request = |uri: &str| {
        let mut request = http::Request::builder()
            .uri("/liandong.v1.Exchange/Publish")
            .body(())
            .unwrap();
        request.extensions_mut().insert(peer(&[uri]));
        request
    };
    let refused = service
        .ready()
        .await
        .unwrap()
        .call(request("urn:liandong:agency:cz-psb"))
        .await
        .unwrap();
    let status = tonic::Status::from_header_map(refused.headers()).unwrap();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "agency cz-psb is disabled by an operator: audit of its systems"
    );
    assert!(
        liandong_core::refusal::is_agency_disabled(&status),
        "marked for clients to retry: {:?}",
        status.metadata()
    );
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Another agency is not concerned.
    service
        .ready()
        .await
        .unwrap()
        .call(request("urn:liandong:agency:cz-eeb"))
        .await
        .unwrap();
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 1);
    let audit = gateway.store.audit_entries().await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].agency.as_str(),
            audit[0].action,
            audit[0].decision.as_str()
        ),
        ("cz-psb", "PUBLISH_REFUSED", "PERMISSION_DENIED")
    );
    assert_eq!(
        audit[0].peer,
        Some(SocketAddr::from(([127, 0, 0, 1], 4000)))
    );
}
