use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use liandong_core::registry::GATEWAY_SENDER;
use liandong_core::signing::{key_id, signing_bytes};

use super::*;
use crate::testing::delivery;

fn pair() -> (Ed25519KeyPair, String) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = hex::encode(pair.public_key().as_ref());
    (pair, public)
}

/// Signs the delivery's notification as `sender` would have.
fn sign(mut delivery: pb::Delivery, pair: &Ed25519KeyPair, sender: &str) -> pb::Delivery {
    let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    delivery.sender = sender.to_owned();
    let n = delivery.notification.as_mut().unwrap();
    n.sender = sender.to_owned();
    n.signature = pair.sign(&signing_bytes(n, sender)).as_ref().to_vec();
    n.signing_key_id = key_id(sender, &public);
    delivery
}

fn registry_text(eeb_hex: &str, gateway_hex: &str) -> String {
    format!(
        "[gateway]\nsigning_public_key = \"{gateway_hex}\"\n\
         [[agency]]\nid = \"cz-eeb\"\nname = \"eeb\"\nrole = \"ENVIRONMENT\"\n\
         region = \"140400\"\nclearance = \"RESTRICTED\"\nsigning_public_keys = [\"{eeb_hex}\"]\n\
         [[agency]]\nid = \"cz-psb\"\nname = \"psb\"\nrole = \"POLICE\"\n\
         region = \"140400\"\nclearance = \"RESTRICTED\"\n"
    )
}

#[test]
fn full_deliveries_verify_and_every_failure_is_named() {
    let (eeb, eeb_hex) = pair();
    let (gateway, gateway_hex) = pair();
    let registry = Registry::parse(
        &registry_text(&eeb_hex, &gateway_hex),
        Path::new("agencies.toml"),
    )
    .unwrap();
    let good = sign(delivery(1, "CZ-1"), &eeb, "cz-eeb");
    assert!(matches!(
        verdict(&registry, &good),
        Verdict::Verified { .. }
    ));
    // The gateway's own notifications verify with the [gateway] key.
    let alert = sign(delivery(2, "CZ-1"), &gateway, GATEWAY_SENDER);
    assert!(matches!(
        verdict(&registry, &alert),
        Verdict::Verified { .. }
    ));
    // ... and not when claimed by an agency.
    let mut as_eeb = alert.clone();
    as_eeb.sender = "cz-eeb".into();
    assert!(matches!(
        verdict(&registry, &as_eeb),
        Verdict::Failed(SignatureError::OtherAgencysKey { .. })
    ));

    let mut tampered = good.clone();
    tampered.notification.as_mut().unwrap().summary = "changed on the way".into();
    assert!(matches!(
        verdict(&registry, &tampered),
        Verdict::Failed(SignatureError::Invalid { .. })
    ));
    assert_eq!(
        verdict(&registry, &delivery(3, "CZ-1")),
        Verdict::Failed(SignatureError::Missing),
        "unsigned from a sender with keys"
    );
    let from_keyless = sign(delivery(4, "CZ-1"), &eeb, "cz-psb");
    assert!(matches!(
        verdict(&registry, &from_keyless),
        Verdict::Failed(SignatureError::NoKeyRegistered { .. })
    ));
}

#[test]
fn withheld_and_redacted_deliveries_are_unverifiable() {
    let (_, eeb_hex) = pair();
    let (_, gateway_hex) = pair();
    let registry = Registry::parse(
        &registry_text(&eeb_hex, &gateway_hex),
        Path::new("agencies.toml"),
    )
    .unwrap();
    let mut stub = delivery(1, "CZ-1");
    stub.withheld = true;
    assert!(matches!(
        verdict(&registry, &stub),
        Verdict::Unverifiable { .. }
    ));
    let mut redacted = delivery(2, "CZ-1");
    redacted.redacted_fields = vec!["body.parties.identifier".into()];
    assert!(matches!(
        verdict(&registry, &redacted),
        Verdict::Unverifiable { .. }
    ));
}

#[test]
fn a_changed_registry_file_is_read_again_and_a_broken_one_keeps_the_last_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agencies.toml");
    let (old, old_hex) = pair();
    let (new, new_hex) = pair();
    let (_, gateway_hex) = pair();
    std::fs::write(&path, registry_text(&old_hex, &gateway_hex)).unwrap();
    let verifier = Verifier::load(&VerifySettings {
        registry: path.clone(),
        on_failure: OnFailure::Reject,
    })
    .unwrap();
    let by_old = sign(delivery(1, "CZ-1"), &old, "cz-eeb");
    let by_new = sign(delivery(2, "CZ-1"), &new, "cz-eeb");
    assert!(matches!(verifier.check(&by_old), Verdict::Verified { .. }));
    assert!(matches!(verifier.check(&by_new), Verdict::Failed(_)));

    std::fs::write(&path, registry_text(&new_hex, &gateway_hex)).unwrap();
    // A modification time the previous read cannot have seen.
    let later = SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(matches!(verifier.check(&by_new), Verdict::Verified { .. }));
    assert!(matches!(verifier.check(&by_old), Verdict::Failed(_)));

    std::fs::write(&path, "not a registry").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later + std::time::Duration::from_secs(5))
        .unwrap();
    assert!(matches!(verifier.check(&by_new), Verdict::Verified { .. }));
}
