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
