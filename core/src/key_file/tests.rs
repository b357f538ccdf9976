use ring::rand::SystemRandom;
use ring::signature::{ED25519, KeyPair as _, UnparsedPublicKey};

use super::*;

/// RFC 8410 section 7: the PKCS#8 v1 encoding of an Ed25519 key is this
/// prefix followed by the 32-byte seed.
const V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A ring (PKCS#8 v2) key and the same key as PKCS#8 v1.
fn v2_and_v1() -> (Vec<u8>, Vec<u8>) {
    let v2 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .unwrap()
        .as_ref()
        .to_vec();
    // ring's v2: 0x30 0x53 0x02 0x01 0x01 0x30 0x05 <oid> 0x04 0x22 0x04 0x20 <seed> ...
    let seed = &v2[16..48];
    let mut v1 = V1_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    (v2, v1)
}

fn public(pair: &Ed25519KeyPair) -> Vec<u8> {
    pair.public_key().as_ref().to_vec()
}

#[test]
fn pkcs8_v1_and_v2_der_give_the_same_key() {
    let (v2, v1) = v2_and_v1();
    let from_v2 = parse_ed25519(&v2).unwrap();
    let from_v1 = parse_ed25519(&v1).unwrap();
    assert_eq!(public(&from_v1), public(&from_v2));
    let signature = from_v1.sign(b"bytes");
    UnparsedPublicKey::new(&ED25519, public(&from_v2))
        .verify(b"bytes", signature.as_ref())
        .unwrap();
}

#[test]
fn garbage_and_foreign_pem_are_refused_naming_what_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, b"not a key at all").unwrap();
    let error = load_ed25519(&garbage).unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with(&garbage.display().to_string()), "{text}");
    assert!(text.contains(ACCEPTED_FORMS), "{text}");
    assert_eq!(error.path(), garbage);

    let ec = dir.path().join("ec.pem");
    std::fs::write(
        &ec,
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let text = load_ed25519(&ec).unwrap_err().to_string();
    assert!(text.contains("no PRIVATE KEY section"), "{text}");
    assert!(text.contains(&ec.display().to_string()), "{text}");
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.pem");
    let error = load_ed25519(&missing).unwrap_err();
    assert!(matches!(error, KeyFileError::Read { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );
}

#[test]
fn a_pkcs8_key_of_another_algorithm_is_refused() {
    let p256 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &SystemRandom::new(),
    )
    .unwrap();
    let reason = parse_ed25519(p256.as_ref()).err().unwrap();
    assert!(reason.contains("not an Ed25519 PKCS#8 key"), "{reason}");
}
