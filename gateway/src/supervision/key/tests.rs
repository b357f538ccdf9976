use std::path::Path;

use liandong_core::signing::verify;

use super::*;

fn signed_by(key: &GatewayKey) -> pb::Notification {
    let mut n = pb::Notification {
        notification_id: "liandong-gateway-1".into(),
        ..Default::default()
    };
    key.sign(&mut n);
    n
}

#[test]
fn loads_openssl_generated_ed25519_key() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("gateway.signing.pem");
    let Ok(made) = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&pem)
        .output()
    else {
        eprintln!("SKIPPED loads_openssl_generated_ed25519_key: openssl is not installed");
        return;
    };
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let der = dir.path().join("gateway.signing.der");
    let converted = std::process::Command::new("openssl")
        .args(["pkey", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der)
        .output()
        .unwrap();
    assert!(converted.status.success());
    let from_pem = GatewayKey::load(&pem).unwrap();
    let from_der = GatewayKey::load(&der).unwrap();
    assert_eq!(from_pem.public_key(), from_der.public_key());
    let n = signed_by(&from_pem);
    verify(&n, GATEWAY_SENDER, &from_der.public_key()).unwrap();
}

#[test]
fn loads_both_forms_liandong_certs_writes() {
    let key = liandong_certs::SigningKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pk8 = dir.path().join("gateway.signing.pk8");
    let pem = dir.path().join("gateway.signing.pem");
    std::fs::write(&pk8, key.pkcs8_der()).unwrap();
    std::fs::write(&pem, key.pkcs8_v1_pem().unwrap()).unwrap();
    for path in [&pk8, &pem] {
        let loaded = GatewayKey::load(path).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
        assert_eq!(loaded.key_id(), key_id(GATEWAY_SENDER, &key.public_key()));
        verify(&signed_by(&loaded), GATEWAY_SENDER, &key.public_key()).unwrap();
    }
}

#[test]
fn key_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let authority = liandong_certs::Authority::new("test CA").unwrap();
    // The gateway's TLS key (P-256) given where its signing key belongs.
    let tls_key = dir.path().join("gateway.key");
    std::fs::write(&tls_key, authority.key_pem()).unwrap();
    let garbage = dir.path().join("garbage.pk8");
    std::fs::write(&garbage, b"\x30\x03\x02\x01\x00").unwrap();
    for path in [&tls_key, &garbage] {
        let err = GatewayKey::load(path).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, KeyError::Key { .. }), "{err:?}");
        assert!(
            text.starts_with(&format!("signing.key: {}", path.display())),
            "{text}"
        );
        assert!(text.contains("PKCS#8 (v1 or v2), DER or PEM"), "{text}");
    }
    let absent = Path::new("/nonexistent/gateway.signing.pem");
    let err = GatewayKey::load(absent).unwrap_err();
    assert!(matches!(err, KeyError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains(&absent.display().to_string()));
}
