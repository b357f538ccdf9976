use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use super::*;

/// A CA, a server certificate for `localhost` and a client certificate, as
/// PEM.
struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf("client.test", ExtendedKeyUsagePurpose::ClientAuth),
    }
}

fn credentials(pki: &Pki) -> ClientCredentials {
    ClientCredentials {
        ca_pem: pki.ca_pem.clone(),
        cert_pem: pki.client.0.clone(),
        key_pem: pki.client.1.clone(),
    }
}

/// A server on 127.0.0.1 speaking only `version`, answering one handshake;
/// its URL.
async fn server(pki: &Pki, version: &'static rustls::SupportedProtocolVersion) -> String {
    let chain = vec![CertificateDer::from_pem_slice(pki.server.0.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.server.1.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // Held open until the client gives up.
                if let Ok(stream) = acceptor.accept(tcp).await {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    drop(stream);
                }
            });
        }
    });
    format!("https://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_gateway_offering_only_tls_1_2_is_refused() {
    let pki = pki();
    let url = server(&pki, &rustls::version::TLS12).await;
    let refused = credentials(&pki)
        .connect(&url, Some("localhost"))
        .await
        .expect_err("a TLS 1.2 server was accepted");
    let TlsError::Connect { reason, .. } = &refused else {
        panic!("not a connection failure: {refused:?}");
    };
    assert!(
        reason.contains("ProtocolVersion") || reason.contains("protocol version"),
        "{reason}"
    );
}

#[tokio::test]
async fn the_client_handshakes_with_a_tls_1_3_gateway() {
    let pki = pki();
    let url = server(&pki, &rustls::version::TLS13).await;
    let config = credentials(&pki).client_config().unwrap();
    assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("https://"))
        .await
        .unwrap();
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[test]
fn a_gateway_url_must_be_https() {
    let pki = pki();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = runtime
        .block_on(credentials(&pki).connect("http://127.0.0.1:1", None))
        .unwrap_err();
    assert!(matches!(refused, TlsError::Endpoint { .. }), "{refused:?}");
}
