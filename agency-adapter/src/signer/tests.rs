use std::path::{Path, PathBuf};

use liandong_core::signing::verify;

use super::*;

fn agency() -> AgencyId {
    AgencyId::parse("agency", "cz-psb").unwrap()
}

#[test]
fn a_signed_notification_verifies_and_names_the_key() {
    let key = liandong_certs::SigningKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cz-psb.signing.pk8");
    std::fs::write(&path, key.pkcs8_der()).unwrap();
    let signer = Signer::load(agency(), &path).unwrap();
    assert_eq!(signer.public_key(), key.public_key());
    assert_eq!(
        signer.key_id(),
        liandong_core::signing::key_id("cz-psb", &key.public_key())
    );
    let mut n = pb::Notification {
        notification_id: "n-1".into(),
        summary: "x".into(),
        ..Default::default()
    };
    signer.sign(&mut n);
    assert_eq!(n.sender, "cz-psb");
    assert_eq!(n.signing_key_id, signer.key_id());
    verify(&n, "cz-psb", &key.public_key()).unwrap();
    assert!(!format!("{signer:?}").contains(&hex::encode(key.pkcs8_der())));
}

#[test]
fn unreadable_or_wrong_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.pk8");
    let err = Signer::load(agency(), &absent).unwrap_err();
    assert!(
        err.to_string().starts_with(&absent.display().to_string()),
        "{err}"
    );
    let bad = dir.path().join("bad.pk8");
    std::fs::write(&bad, b"-----BEGIN PRIVATE KEY-----").unwrap();
    let err = Signer::load(agency(), &bad).unwrap_err();
    assert!(matches!(err, SignerError::Key { .. }), "{err:?}");
    assert!(err.to_string().contains("bad.pk8"), "{err}");
}

/// `openssl genpkey -algorithm ed25519` in PEM (PKCS#8 v1) and in DER, when
/// openssl is installed.
fn openssl_keys(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let pem = dir.join("openssl.pem");
    let der = dir.join("openssl.der");
    let made = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&pem)
        .output()
        .ok()?;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let converted = std::process::Command::new("openssl")
        .args(["pkey", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der)
        .output()
        .unwrap();
    assert!(converted.status.success());
    Some((pem, der))
}

#[test]
fn loads_openssl_generated_ed25519_key() {
    let dir = tempfile::tempdir().unwrap();
    let Some((pem, der)) = openssl_keys(dir.path()) else {
        eprintln!("SKIPPED loads_openssl_generated_ed25519_key: openssl is not installed");
        return;
    };
    let from_pem = Signer::load(agency(), &pem).unwrap();
    let from_der = Signer::load(agency(), &der).unwrap();
    assert_eq!(from_pem.public_key(), from_der.public_key());
    assert_eq!(from_pem.key_id(), from_der.key_id());
    // What it signs verifies with the public key OpenSSL derives.
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(public.status.success());
    let raw: [u8; 32] = public.stdout[12..].try_into().unwrap();
    assert_eq!(from_pem.public_key(), raw);
    let mut n = pb::Notification {
        notification_id: "n-1".into(),
        ..Default::default()
    };
    from_pem.sign(&mut n);
    verify(&n, "cz-psb", &raw).unwrap();
}

#[test]
fn loads_the_pkcs8_v1_pem_liandong_certs_writes() {
    let key = liandong_certs::SigningKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("cz-psb.signing.pem");
    std::fs::write(&pem, key.pkcs8_v1_pem().unwrap()).unwrap();
    let signer = Signer::load(agency(), &pem).unwrap();
    assert_eq!(signer.public_key(), key.public_key());
    let mut n = pb::Notification {
        notification_id: "n-1".into(),
        ..Default::default()
    };
    signer.sign(&mut n);
    verify(&n, "cz-psb", &key.public_key()).unwrap();
}

#[test]
fn key_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A certificate (the agency's TLS key pair is not its signing key).
    let authority = liandong_certs::Authority::new("test CA").unwrap();
    let tls_key = dir.path().join("cz-psb.key");
    std::fs::write(&tls_key, authority.agency("cz-psb").unwrap().key_pem).unwrap();
    let cert = dir.path().join("ca.crt");
    std::fs::write(&cert, authority.cert_pem()).unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, b"").unwrap();
    for path in [&tls_key, &cert, &empty] {
        let err = Signer::load(agency(), path).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SignerError::Key { .. }), "{err:?}");
        assert!(
            text.starts_with(&path.display().to_string()),
            "{text} does not name {}",
            path.display()
        );
        assert!(
            text.contains("PKCS#8 (v1 or v2), DER or PEM"),
            "{text} does not say what is accepted"
        );
        assert!(!text.contains("PRIVATE KEY-----\n"), "{text}");
    }
    let absent = dir.path().join("absent.pem");
    let err = Signer::load(agency(), &absent).unwrap_err();
    assert!(matches!(err, SignerError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.pem"), "{err}");
}
