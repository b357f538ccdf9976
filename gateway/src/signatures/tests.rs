use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use liandong_core::signing::{key_id as id_of, signing_bytes};

use super::*;

fn pair() -> (Ed25519KeyPair, String) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = hex::encode(pair.public_key().as_ref());
    (pair, public)
}

fn signed(pair: &Ed25519KeyPair, sender: &str) -> pb::Notification {
    let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    let mut n = pb::Notification {
        notification_id: format!("{sender}-1"),
        summary: "s".into(),
        ..Default::default()
    };
    n.signature = pair.sign(&signing_bytes(&n, sender)).as_ref().to_vec();
    n.signing_key_id = id_of(sender, &public);
    n
}

fn registry(eeb_keys: &[&str], gateway_key: Option<&str>) -> Registry {
    let mut text = String::new();
    if let Some(key) = gateway_key {
        text.push_str(&format!("[gateway]\nsigning_public_key = \"{key}\"\n"));
    }
    text.push_str(
        "[[agency]]\nid = \"cz-eeb\"\nname = \"eeb\"\nrole = \"ENVIRONMENT\"\n\
         region = \"140400\"\nclearance = \"RESTRICTED\"\n",
    );
    if !eeb_keys.is_empty() {
        let list: Vec<String> = eeb_keys.iter().map(|k| format!("\"{k}\"")).collect();
        text.push_str(&format!("signing_public_keys = [{}]\n", list.join(", ")));
    }
    text.push_str(
        "[[agency]]\nid = \"cz-psb\"\nname = \"psb\"\nrole = \"POLICE\"\n\
         region = \"140400\"\nclearance = \"RESTRICTED\"\n",
    );
    Registry::parse(&text, Path::new("agencies.toml")).unwrap()
}

#[test]
fn unsigned_is_accepted_only_from_an_agency_without_key_when_not_required() {
    let (eeb, eeb_hex) = pair();
    let unsigned = pb::Notification::default();
    let keyless = registry(&[], None);
    assert_eq!(
        check_publish(&keyless, false, &unsigned, "cz-eeb"),
        Ok(None)
    );
    assert_eq!(
        check_publish(&keyless, true, &unsigned, "cz-eeb"),
        Err(SignatureError::NoKeyRegistered {
            agency: "cz-eeb".into()
        })
    );
    let keyed = registry(&[&eeb_hex], None);
    assert_eq!(
        check_publish(&keyed, false, &unsigned, "cz-eeb"),
        Err(SignatureError::Missing),
        "a registered key makes the signature mandatory"
    );
    let good = signed(&eeb, "cz-eeb");
    for require in [false, true] {
        assert!(
            check_publish(&keyed, require, &good, "cz-eeb")
                .unwrap()
                .is_some()
        );
    }
}

#[test]
fn during_a_rollover_either_key_verifies_and_after_it_only_the_new_one() {
    let (old, old_hex) = pair();
    let (new, new_hex) = pair();
    let both = registry(&[&old_hex, &new_hex], None);
    let after = registry(&[&new_hex], None);
    let by_old = signed(&old, "cz-eeb");
    let by_new = signed(&new, "cz-eeb");
    assert!(check_publish(&both, true, &by_old, "cz-eeb").is_ok());
    assert!(check_publish(&both, true, &by_new, "cz-eeb").is_ok());
    assert!(check_publish(&after, true, &by_new, "cz-eeb").is_ok());
    assert_eq!(
        check_publish(&after, true, &by_old, "cz-eeb"),
        Err(SignatureError::UnknownKeyId {
            agency: "cz-eeb".into()
        })
    );
}

#[test]
fn the_registry_must_publish_the_gateways_own_key_or_none() {
    let key = GatewayKey::generate();
    let own = hex::encode(key.public_key());
    let (_, other) = pair();
    let path = Path::new("agencies.toml");
    check_registry(&registry(&[], Some(&own)), path, &key, true).unwrap();
    check_registry(&registry(&[], None), path, &key, false).unwrap();
    let error = check_registry(&registry(&[], Some(&other)), path, &key, true)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "agencies.toml: [gateway] signing_public_key is the key liandong-gateway:"
        ) && error.contains(&own),
        "{error}"
    );
}
