use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::*;

fn notification() -> pb::Notification {
    pb::Notification {
        notification_id: "n-1".into(),
        case_ref: "C-1".into(),
        event: pb::EventType::ClueShared as i32,
        confidentiality: pb::Confidentiality::Restricted as i32,
        recipients: vec!["cz-psb".into(), "ab".into()],
        region: "140423".into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        summary: "s".into(),
        sender: "someone-else".into(),
        signature: vec![1, 2, 3],
        signing_key_id: "x".into(),
        ..Default::default()
    }
}

/// The bytes written out by hand from the rules in docs/SIGNING.md: a
/// second implementation of the encoding, so the first cannot drift.
#[test]
fn signing_bytes_match_the_documented_encoding_byte_for_byte() {
    let mut expected = b"liandong.v1.Notification\n".to_vec();
    let mut field = |tag: u8, value: &[u8]| {
        expected.push(tag);
        expected.push(value.len() as u8);
        expected.extend_from_slice(value);
    };
    field(0x0a, b"n-1"); // 1 notification_id
    field(0x12, b"C-1"); // 2 case_ref
    expected.extend_from_slice(&[0x18, 0x01]); // 3 event = CLUE_SHARED
    expected.extend_from_slice(&[0x20, 0x03]); // 4 confidentiality = RESTRICTED
    let mut field = |tag: u8, value: &[u8]| {
        expected.push(tag);
        expected.push(value.len() as u8);
        expected.extend_from_slice(value);
    };
    field(0x2a, b"cz-psb"); // 5 recipients, one record each, in order
    field(0x2a, b"ab");
    // 6 confidentiality_note: empty, omitted
    field(0x3a, b"140423"); // 7 region
    field(0x42, &[0x08, 0x01]); // 8 occurred_at {seconds: 1}; nanos 0 omitted
    field(0x4a, b"s"); // 9 summary
    // 10 body: absent, omitted
    field(0x5a, b"cz-eeb"); // 11 sender: the signing agency, not the message's
    // 12 contact empty; 13 signature and 14 signing_key_id cleared
    assert_eq!(signing_bytes(&notification(), "cz-eeb"), expected);
}

#[test]
fn signature_and_key_id_do_not_change_the_signing_bytes_but_content_does() {
    let a = notification();
    let b = pb::Notification {
        signature: vec![9; 64],
        signing_key_id: "cz-eeb:0011223344556677".into(),
        sender: String::new(),
        ..a.clone()
    };
    assert_eq!(signing_bytes(&a, "cz-eeb"), signing_bytes(&b, "cz-eeb"));
    assert_ne!(signing_bytes(&a, "cz-eeb"), signing_bytes(&a, "cz-psb"));
    let c = pb::Notification {
        summary: "t".into(),
        ..a.clone()
    };
    assert_ne!(signing_bytes(&a, "cz-eeb"), signing_bytes(&c, "cz-eeb"));
    // An empty-but-present message field is encoded (tag, length 0).
    let d = pb::Notification {
        body: Some(pb::CaseBody::default()),
        ..a.clone()
    };
    let bytes = signing_bytes(&d, "cz-eeb");
    assert!(bytes.windows(2).any(|w| w == [0x52, 0x00]), "{bytes:?}");
}

#[test]
fn key_id_is_agency_and_sha256_prefix() {
    // SHA-256 of 32 zero bytes starts with 66687aadf862bd77.
    assert_eq!(key_id("cz-psb", &[0; 32]), "cz-psb:66687aadf862bd77");
}

fn signed(pair: &Ed25519KeyPair, sender: &str) -> pb::Notification {
    let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    let mut n = notification();
    n.sender = String::new();
    n.signature = pair.sign(&signing_bytes(&n, sender)).as_ref().to_vec();
    n.signing_key_id = key_id(sender, &public);
    n
}

#[test]
fn verify_accepts_the_signature_and_refuses_every_change() {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    let n = signed(&pair, "cz-eeb");
    verify(&n, "cz-eeb", &public).unwrap();
    // The gateway fills in sender: still valid.
    let forwarded = pb::Notification {
        sender: "cz-eeb".into(),
        ..n.clone()
    };
    verify(&forwarded, "cz-eeb", &public).unwrap();

    let changed = pb::Notification {
        summary: "other".into(),
        ..n.clone()
    };
    assert!(matches!(
        verify(&changed, "cz-eeb", &public),
        Err(SignatureError::Invalid { .. })
    ));
    // Another sender claiming it: the key id no longer matches.
    assert_eq!(
        verify(&n, "cz-psb", &public),
        Err(SignatureError::KeyId {
            expected: key_id("cz-psb", &public)
        })
    );
    let unsigned = pb::Notification {
        signature: vec![],
        ..n.clone()
    };
    assert_eq!(
        verify(&unsigned, "cz-eeb", &public),
        Err(SignatureError::Missing)
    );
    let short = pb::Notification {
        signature: vec![0; 10],
        ..n
    };
    assert_eq!(
        verify(&short, "cz-eeb", &public),
        Err(SignatureError::Length(10))
    );
}

/// The worked example of docs/SIGNING.md (RFC 8032's first test key).
#[test]
fn the_documented_test_vector_holds() {
    let seed =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    let public =
        hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap();
    let pair = Ed25519KeyPair::from_seed_and_public_key(&seed, &public).unwrap();
    let public: [u8; 32] = public.try_into().unwrap();
    let n = pb::Notification {
        notification_id: "xy-1".into(),
        case_ref: "CZ-XY-2026-0001".into(),
        event: pb::EventType::CaseTransferred as i32,
        confidentiality: pb::Confidentiality::Restricted as i32,
        recipients: vec!["cz-psb-xiangyuan".into()],
        confidentiality_note: "侦查阶段".into(),
        region: "140423".into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_795_163_400,
            nanos: 0,
        }),
        summary: "移送".into(),
        ..Default::default()
    };
    let bytes = signing_bytes(&n, "cz-eeb-xiangyuan");
    assert_eq!(
        hex::encode(&bytes),
        "6c69616e646f6e672e76312e4e6f74696669636174696f6e0a\
         0a0478792d31\
         120f435a2d58592d323032362d30303031\
         1803\
         2003\
         2a10637a2d7073622d7869616e677975616e\
         320ce4bea6e69fa5e998b6e6aeb5\
         3a06313430343233\
         420608888a80d806\
         4a06e7a7bbe98081\
         5a10637a2d6565622d7869616e677975616e"
    );
    assert_eq!(
        key_id("cz-eeb-xiangyuan", &public),
        "cz-eeb-xiangyuan:21fe31dfa154a261"
    );
    assert_eq!(
        hex::encode(pair.sign(&bytes).as_ref()),
        "7fd0105534ba4239b395394faee89c95e8bf7a922023ba0541a6eb95ac7c9232\
         6e965b720ed9f44f4d4b9154962235c2b85548197b3619e9b31c943e84164403"
    );
}

fn pair() -> (Ed25519KeyPair, [u8; 32]) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    (pair, public)
}

#[test]
fn the_key_is_chosen_by_its_id_among_the_senders_keys() {
    let (old, old_public) = pair();
    let (new, new_public) = pair();
    let keys = [old_public, new_public];
    let by_old = signed(&old, "cz-eeb");
    let by_new = signed(&new, "cz-eeb");
    assert_eq!(
        verify_with_any(&by_old, "cz-eeb", &keys),
        Ok(key_id("cz-eeb", &old_public))
    );
    assert_eq!(
        verify_with_any(&by_new, "cz-eeb", &keys),
        Ok(key_id("cz-eeb", &new_public))
    );
    // The old key retired: its signatures name a key no longer registered.
    assert_eq!(
        verify_with_any(&by_old, "cz-eeb", &[new_public]),
        Err(SignatureError::UnknownKeyId {
            agency: "cz-eeb".into()
        })
    );
    // A signature by one key under the id of the other does not verify.
    let swapped = pb::Notification {
        signing_key_id: key_id("cz-eeb", &new_public),
        ..by_old.clone()
    };
    assert_eq!(
        verify_with_any(&swapped, "cz-eeb", &keys),
        Err(SignatureError::Invalid {
            key_id: key_id("cz-eeb", &new_public)
        })
    );
    assert_eq!(
        verify_with_any(&by_old, "cz-eeb", &[]),
        Err(SignatureError::NoKeyRegistered {
            agency: "cz-eeb".into()
        })
    );
    let unsigned = pb::Notification {
        signature: vec![],
        ..by_old
    };
    assert_eq!(
        verify_with_any(&unsigned, "cz-eeb", &keys),
        Err(SignatureError::Missing)
    );
}

#[test]
fn no_refusal_repeats_the_key_id_the_sender_wrote() {
    let (pair, public) = pair();
    let mut n = signed(&pair, "cz-eeb");
    n.signing_key_id = "cz-eeb:\nFORGED log line".into();
    for error in [
        verify(&n, "cz-eeb", &public).unwrap_err(),
        verify_with_any(&n, "cz-eeb", &[public]).unwrap_err(),
    ] {
        assert!(!error.to_string().contains("FORGED"), "{error}");
    }
}
