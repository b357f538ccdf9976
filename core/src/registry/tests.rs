use super::*;

const GOOD: &str = r#"
[[agency]]
id = "cz-psb"
name = "长治市公安局"
role = "POLICE"
region = "140400"
clearance = "CONFIDENTIAL"

[[agency]]
id = "cz-psb-xiangyuan"
name = "襄垣县公安局"
role = "POLICE"
region = "140423"
parent = "cz-psb"
clearance = "RESTRICTED"
"#;

fn parse(text: &str) -> Result<Registry, RegistryError> {
    Registry::parse(text, Path::new("agencies.toml"))
}

#[test]
fn good_registry_loads_with_default_identities() {
    let registry = parse(GOOD).unwrap();
    let branch = registry
        .by_identity("urn:liandong:agency:cz-psb-xiangyuan")
        .unwrap();
    assert_eq!(branch.clearance, Confidentiality::Restricted);
    let city: AgencyId = "cz-psb".parse().unwrap();
    assert!(registry.is_ancestor(&city, &branch.id));
    assert!(!registry.is_ancestor(&branch.id, &city));
}

#[test]
fn entry_errors_name_file_entry_and_field() {
    let bad = GOOD.replace("region = \"140423\"", "region = \"14042\"");
    let message = parse(&bad).unwrap_err().to_string();
    assert_eq!(
        message,
        "agencies.toml: agency[1] (cz-psb-xiangyuan): region: must be a six-digit GB/T 2260 code"
    );
    let bad = GOOD.replace("parent = \"cz-psb\"", "parent = \"cz-nobody\"");
    let message = parse(&bad).unwrap_err().to_string();
    assert!(
        message.contains("agency[1] (cz-psb-xiangyuan): parent: names cz-nobody"),
        "{message}"
    );
    let bad = GOOD.replace("clearance = \"RESTRICTED\"", "clearance = \"SECRET\"");
    assert!(
        parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("clearance: must be one of")
    );
}

#[test]
fn duplicates_unknown_keys_and_empty_files_are_refused() {
    let twice = format!(
        "{GOOD}{}",
        &GOOD[GOOD.find("[[agency]]").unwrap()..GOOD.find("\n\n[[agency]]").unwrap()]
    );
    assert!(
        parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("id: is registered twice")
    );
    let unknown = GOOD.replace(
        "role = \"POLICE\"\nregion = \"140400\"",
        "role = \"POLICE\"\nregoin = \"140400\"",
    );
    assert!(matches!(
        parse(&unknown).unwrap_err(),
        RegistryError::File(FileError::Syntax { .. })
    ));
    assert!(matches!(
        parse("").unwrap_err(),
        RegistryError::Empty { .. }
    ));
}

#[test]
fn an_agency_cannot_take_the_gateway_sender_id() {
    let bad = GOOD.replace("id = \"cz-psb-xiangyuan\"", "id = \"liandong-gateway\"");
    let message = parse(&bad).unwrap_err().to_string();
    assert_eq!(
        message,
        "agencies.toml: agency[1] (liandong-gateway): id: liandong-gateway is reserved for the gateway's own notifications"
    );
}

const KEY_A: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const KEY_B: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
const KEY_C: &str = "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025";

fn key(text: &str) -> [u8; 32] {
    hex::decode(text).unwrap().try_into().unwrap()
}

/// GOOD with `line` added to its first agency (cz-psb).
fn with_psb(line: &str) -> String {
    GOOD.replacen(
        "clearance = \"CONFIDENTIAL\"",
        &format!("clearance = \"CONFIDENTIAL\"\n{line}"),
        1,
    )
}

fn psb(registry: &Registry) -> &Agency {
    registry.get(&"cz-psb".parse().unwrap()).unwrap()
}

#[test]
fn signing_keys_are_a_list_of_one_or_two_or_the_legacy_single_key() {
    let two = parse(&with_psb(&format!(
        "signing_public_keys = [\"{KEY_A}\", \"{KEY_B}\"]"
    )))
    .unwrap();
    assert_eq!(psb(&two).signing_keys, vec![key(KEY_A), key(KEY_B)]);
    let one = parse(&with_psb(&format!("signing_public_keys = [\"{KEY_A}\"]"))).unwrap();
    let legacy = parse(&with_psb(&format!("signing_public_key = \"{KEY_A}\""))).unwrap();
    assert_eq!(psb(&one).signing_keys, vec![key(KEY_A)]);
    assert_eq!(psb(&legacy).signing_keys, psb(&one).signing_keys);
    assert!(
        parse(GOOD)
            .unwrap()
            .agencies()
            .all(|a| a.signing_keys.is_empty())
    );
    assert_eq!(parse(GOOD).unwrap().gateway_key(), None);
}

#[test]
fn bad_signing_key_entries_are_refused_naming_the_field() {
    let cases = [
        (
            format!("signing_public_key = \"{KEY_A}\"\nsigning_public_keys = [\"{KEY_B}\"]"),
            "agencies.toml: agency[0] (cz-psb): signing_public_key: and signing_public_keys are both set; keep signing_public_keys only",
        ),
        (
            format!("signing_public_keys = [\"{KEY_A}\", \"{KEY_A}\"]"),
            "agencies.toml: agency[0] (cz-psb): signing_public_keys[1]: is listed twice",
        ),
        (
            format!("signing_public_keys = [\"{KEY_A}\", \"{KEY_B}\", \"{KEY_C}\"]"),
            "agencies.toml: agency[0] (cz-psb): signing_public_keys: lists 3 keys; list one, or two during a rollover",
        ),
        (
            "signing_public_keys = []".to_owned(),
            "agencies.toml: agency[0] (cz-psb): signing_public_keys: lists 0 keys; list one, or two during a rollover",
        ),
        (
            format!("signing_public_keys = [\"{KEY_A}\", \"abcd\"]"),
            "agencies.toml: agency[0] (cz-psb): signing_public_keys[1]: must be 64 hex digits (a raw Ed25519 public key)",
        ),
    ];
    for (line, expected) in cases {
        let message = parse(&with_psb(&line)).unwrap_err().to_string();
        assert_eq!(message, expected);
    }
    // One key registered for two agencies.
    let shared = with_psb(&format!("signing_public_key = \"{KEY_A}\"")).replace(
        "clearance = \"RESTRICTED\"",
        &format!("clearance = \"RESTRICTED\"\nsigning_public_key = \"{KEY_A}\""),
    );
    assert_eq!(
        parse(&shared).unwrap_err().to_string(),
        "agencies.toml: agency[1] (cz-psb-xiangyuan): signing_public_keys: holds a key already registered for cz-psb"
    );
}

#[test]
fn the_gateway_key_is_published_in_its_own_table() {
    let text = format!("[gateway]\nsigning_public_key = \"{KEY_C}\"\n{GOOD}");
    let registry = parse(&text).unwrap();
    assert_eq!(registry.gateway_key(), Some(key(KEY_C)));
    assert_eq!(registry.signing_keys_of(GATEWAY_SENDER), vec![key(KEY_C)]);
    let bad = format!("[gateway]\nsigning_public_key = \"zz\"\n{GOOD}");
    assert_eq!(
        parse(&bad).unwrap_err().to_string(),
        "agencies.toml: gateway: signing_public_key: must be 64 hex digits (a raw Ed25519 public key)"
    );
    let unknown = format!("[gateway]\nsigning_public_key = \"{KEY_C}\"\nkey = 1\n{GOOD}");
    assert!(matches!(
        parse(&unknown).unwrap_err(),
        RegistryError::File(FileError::Syntax { .. })
    ));
    // The gateway's key cannot also be an agency's.
    let taken = format!(
        "[gateway]\nsigning_public_key = \"{KEY_C}\"\n{}",
        with_psb(&format!("signing_public_key = \"{KEY_C}\""))
    );
    assert!(
        parse(&taken)
            .unwrap_err()
            .to_string()
            .contains("holds a key already registered for liandong-gateway")
    );
}

mod key_choice {
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    use super::*;
    use crate::signing::{SignatureError, key_id, signing_bytes};

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
        n.signing_key_id = key_id(sender, &public);
        n
    }

    #[test]
    fn verification_picks_the_senders_key_and_names_the_owner_of_anothers() {
        let (psb_old, psb_old_hex) = pair();
        let (psb_new, psb_new_hex) = pair();
        let (branch, branch_hex) = pair();
        let (gateway, gateway_hex) = pair();
        let text = format!("[gateway]\nsigning_public_key = \"{gateway_hex}\"\n{GOOD}")
            .replacen(
                "clearance = \"CONFIDENTIAL\"",
                &format!(
                    "clearance = \"CONFIDENTIAL\"\nsigning_public_keys = [\"{psb_old_hex}\", \"{psb_new_hex}\"]"
                ),
                1,
            )
            .replace(
                "clearance = \"RESTRICTED\"",
                &format!("clearance = \"RESTRICTED\"\nsigning_public_keys = [\"{branch_hex}\"]"),
            );
        let registry = parse(&text).unwrap();
        assert!(
            registry
                .verify_signature(&signed(&psb_old, "cz-psb"), "cz-psb")
                .is_ok()
        );
        assert!(
            registry
                .verify_signature(&signed(&psb_new, "cz-psb"), "cz-psb")
                .is_ok()
        );
        assert!(
            registry
                .verify_signature(&signed(&gateway, GATEWAY_SENDER), GATEWAY_SENDER)
                .is_ok()
        );
        // The branch's key id on a notification sent by cz-psb.
        assert_eq!(
            registry.verify_signature(&signed(&branch, "cz-psb-xiangyuan"), "cz-psb"),
            Err(SignatureError::OtherAgencysKey {
                agency: "cz-psb".into(),
                owner: "cz-psb-xiangyuan".into(),
            })
        );
        // The gateway's key id on a notification sent by cz-psb.
        assert!(matches!(
            registry.verify_signature(&signed(&gateway, GATEWAY_SENDER), "cz-psb"),
            Err(SignatureError::OtherAgencysKey { owner, .. }) if owner == GATEWAY_SENDER
        ));
        // A key registered for no one.
        let (stranger, _) = pair();
        assert_eq!(
            registry.verify_signature(&signed(&stranger, "cz-psb"), "cz-psb"),
            Err(SignatureError::UnknownKeyId {
                agency: "cz-psb".into()
            })
        );
        // An unregistered sender has no keys.
        assert!(matches!(
            registry.verify_signature(&signed(&stranger, "cz-nobody"), "cz-nobody"),
            Err(SignatureError::NoKeyRegistered { .. })
        ));
    }
}
