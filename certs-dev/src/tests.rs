//! Unit tests of the development PKI: parse generated certificates back with
//! x509-parser and check what other crates rely on.

use std::path::Path;

use liandong_core::toml_file::FileError;
use ring::signature::{ED25519, UnparsedPublicKey};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::{Pem, parse_x509_pem};

use super::*;

fn pem_of(cert_pem: &str) -> Pem {
    let (rest, pem) = parse_x509_pem(cert_pem.as_bytes()).expect("valid PEM");
    assert!(rest.iter().all(u8::is_ascii_whitespace), "trailing data");
    assert_eq!(pem.label, "CERTIFICATE");
    pem
}

/// SAN entries rendered as "URI:..", "DNS:..", "IP:a.b.c.d".
fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Some(ext) = cert.subject_alternative_name().expect("SAN parses") else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(ip) => {
                let octets: [u8; 4] = (*ip).try_into().expect("IPv4");
                format!("IP:{}", std::net::Ipv4Addr::from(octets))
            }
            other => format!("OTHER:{other:?}"),
        })
        .collect()
}

fn eku(cert: &X509Certificate<'_>) -> (bool, bool) {
    let ext = cert
        .extended_key_usage()
        .expect("EKU parses")
        .expect("EKU present");
    (ext.value.server_auth, ext.value.client_auth)
}

fn cn(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .map(|a| a.as_str().expect("utf8 CN").to_owned())
}

/// Checks that `cert` was signed by `ca` (issuer name and signature).
fn assert_issued_by(cert: &X509Certificate<'_>, ca: &X509Certificate<'_>) {
    assert_eq!(cert.issuer(), ca.subject());
    cert.verify_signature(Some(ca.public_key()))
        .expect("signature by CA verifies");
}

#[test]
fn agency_uri_format() {
    assert_eq!(agency_uri("cz-eeb"), "urn:liandong:agency:cz-eeb");
    assert!(agency_uri("x").starts_with(AGENCY_URI_PREFIX));
}

#[test]
fn agency_id_rules() {
    for ok in ["a", "cz-eeb", "police-01", &"a".repeat(64)] {
        assert!(validate_agency_id(ok).is_ok(), "{ok} should be valid");
    }
    for bad in [
        "",
        "1abc",
        "-abc",
        "Abc",
        "a_b",
        "a:b",
        "a b",
        "长治",
        &"a".repeat(65),
    ] {
        let err = validate_agency_id(bad).expect_err(bad);
        assert!(matches!(err, CertError::InvalidAgencyId { ref id, .. } if id == bad));
    }
}

#[test]
fn ca_is_self_signed_ca() {
    let ca = Authority::new("Test CA").unwrap();
    let pem = pem_of(&ca.cert_pem());
    let cert = pem.parse_x509().unwrap();
    assert!(cert.is_ca());
    assert_eq!(cn(&cert).as_deref(), Some("Test CA"));
    assert_issued_by(&cert, &cert);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let v = cert.validity();
    assert!(v.not_before.timestamp() <= now - 86_000);
    assert!(v.not_after.timestamp() >= now + 3649 * 86_400);
}

#[test]
fn agency_cert_has_exactly_one_uri_san_and_client_auth() {
    let ca = Authority::new("Test CA").unwrap();
    let ca_pem = pem_of(&ca.cert_pem());
    let ca_cert = ca_pem.parse_x509().unwrap();

    let ck = ca.agency("cz-eeb").unwrap();
    assert!(ck.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let pem = pem_of(&ck.cert_pem);
    let cert = pem.parse_x509().unwrap();
    assert_eq!(sans(&cert), vec!["URI:urn:liandong:agency:cz-eeb"]);
    assert_eq!(eku(&cert), (false, true));
    assert_eq!(cn(&cert).as_deref(), Some("cz-eeb"));
    assert!(!cert.is_ca());
    assert_issued_by(&cert, &ca_cert);
    assert!(cert.validity().is_valid());
}

#[test]
fn agency_rejects_invalid_id() {
    let ca = Authority::new("Test CA").unwrap();
    let err = ca.agency("Bad:Id").unwrap_err();
    assert!(err.is_usage_error());
    assert!(err.to_string().contains("Bad:Id"), "{err}");
}

#[test]
fn server_cert_sans_and_server_auth() {
    let ca = Authority::new("Test CA").unwrap();
    let ca_pem = pem_of(&ca.cert_pem());
    let ca_cert = ca_pem.parse_x509().unwrap();

    let ck = ca
        .server(&["localhost", "127.0.0.1", "gw.example"])
        .unwrap();
    let pem = pem_of(&ck.cert_pem);
    let cert = pem.parse_x509().unwrap();
    assert_eq!(
        sans(&cert),
        vec!["DNS:localhost", "IP:127.0.0.1", "DNS:gw.example"]
    );
    assert_eq!(eku(&cert), (true, false));
    assert_issued_by(&cert, &ca_cert);

    assert!(matches!(ca.server(&[]), Err(CertError::NoServerNames)));
}

#[test]
fn expired_spec_gives_not_after_in_the_past() {
    let ca = Authority::new("Test CA").unwrap();
    let spec = ClientSpec::agency("cz-eeb").expired();
    let now = OffsetDateTime::now_utc();
    assert!(spec.not_after < now && spec.not_before < spec.not_after);

    let ck = ca.client(&spec).unwrap();
    let pem = pem_of(&ck.cert_pem);
    let cert = pem.parse_x509().unwrap();
    assert!(cert.validity().not_after.timestamp() < now.unix_timestamp());
    assert!(!cert.validity().is_valid());
    // Still otherwise a proper agency certificate.
    assert_eq!(sans(&cert), vec!["URI:urn:liandong:agency:cz-eeb"]);
}

#[test]
fn client_spec_builds_bad_certificates() {
    let ca = Authority::new("Test CA").unwrap();
    let spec = ClientSpec {
        common_name: String::new(),
        uris: vec![agency_uri("a"), agency_uri("b")],
        dns_names: vec!["evil.example".to_owned()],
        usage: KeyUsage::ServerOnly,
        ..ClientSpec::agency("a")
    };
    let ck = ca.client(&spec).unwrap();
    let pem = pem_of(&ck.cert_pem);
    let cert = pem.parse_x509().unwrap();
    assert_eq!(
        sans(&cert),
        vec![
            "URI:urn:liandong:agency:a",
            "URI:urn:liandong:agency:b",
            "DNS:evil.example"
        ]
    );
    assert_eq!(eku(&cert), (true, false));
    assert_eq!(cn(&cert), None);

    let none = ClientSpec {
        uris: vec![],
        ..ClientSpec::agency("a")
    };
    let ck = ca.client(&none).unwrap();
    let pem = pem_of(&ck.cert_pem);
    assert!(sans(&pem.parse_x509().unwrap()).is_empty());
}

#[test]
fn authority_round_trips_through_pem() {
    let ca = Authority::new("Round Trip CA").unwrap();
    let loaded = Authority::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
    let ca_pem = pem_of(&ca.cert_pem());
    let ca_cert = ca_pem.parse_x509().unwrap();
    let ck = loaded.agency("later").unwrap();
    let pem = pem_of(&ck.cert_pem);
    assert_issued_by(&pem.parse_x509().unwrap(), &ca_cert);
    assert!(format!("{loaded:?}").contains("Round Trip CA"));
}

#[test]
fn debug_redacts_private_keys() {
    let ca = Authority::new("Test CA").unwrap();
    let ck = ca.agency("cz-eeb").unwrap();
    let key_body = ck.key_pem.lines().nth(1).unwrap().to_owned();
    let dbg = format!("{ck:?}");
    assert!(dbg.contains("[redacted]"));
    assert!(!dbg.contains("PRIVATE KEY") && !dbg.contains(&key_body));

    let ca_key = ca.key_pem();
    let ca_dbg = format!("{ca:?}");
    assert!(!ca_dbg.contains("PRIVATE KEY"));
    assert!(!ca_dbg.contains(ca_key.lines().nth(1).unwrap()));

    let sk = SigningKey::generate().unwrap();
    let sk_dbg = format!("{sk:?}");
    assert!(sk_dbg.contains(&sk.public_key_hex()));
    assert!(!sk_dbg.contains(&signing::to_hex(sk.pkcs8_der())));
}

#[test]
fn signing_key_signs_and_verifies() {
    let sk = SigningKey::generate().unwrap();
    let hex = sk.public_key_hex();
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(hex, signing::to_hex(&sk.public_key()));

    let msg = b"case 2024-001 transfer";
    let public = UnparsedPublicKey::new(&ED25519, sk.public_key());
    let sig = sk.sign(msg);
    public.verify(msg, &sig).expect("own signature verifies");
    assert!(public.verify(b"tampered", &sig).is_err());

    // The PKCS#8 DER is what agencies load with ring.
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(sk.pkcs8_der()).unwrap();
    public
        .verify(msg, pair.sign(msg).as_ref())
        .expect("PKCS#8 key matches public key");

    let reloaded = SigningKey::from_pkcs8_der(sk.pkcs8_der()).unwrap();
    assert_eq!(reloaded.public_key(), sk.public_key());
    assert_ne!(
        SigningKey::generate().unwrap().public_key(),
        sk.public_key()
    );
}

#[test]
fn to_hex_is_lower_case() {
    assert_eq!(signing::to_hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
}

const GOOD_REGISTRY: &str = r#"
[meta]
version = 3

[[agency]]
id = "cz-eeb"
name = "长治市生态环境局"
role = "ENVIRONMENT"
region = "140400"
clearance = "CONFIDENTIAL"
future_field = { x = 1 }

[[agency]]
id = "cz-procuratorate"
name = "长治市人民检察院"

[[agency]]
id = "cz-police"
"#;

#[test]
fn registry_reads_ids_in_order_ignoring_other_fields() {
    let ids = registry::parse_agency_ids(Path::new("reg.toml"), GOOD_REGISTRY).unwrap();
    assert_eq!(ids, vec!["cz-eeb", "cz-procuratorate", "cz-police"]);
}

#[test]
fn registry_rejects_invalid_id_naming_file_entry_and_id() {
    let text = "[[agency]]\nid = \"ok\"\n[[agency]]\nid = \"Bad_Id\"\n";
    let err = registry::parse_agency_ids(Path::new("/etc/reg.toml"), text).unwrap_err();
    match &err {
        CertError::RegistryEntry {
            path, entry, id, ..
        } => {
            assert_eq!(path, Path::new("/etc/reg.toml"));
            assert_eq!(*entry, 2);
            assert_eq!(id, "Bad_Id");
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("/etc/reg.toml") && msg.contains("entry 2") && msg.contains("Bad_Id"));
    assert!(err.is_usage_error());
}

#[test]
fn registry_rejects_duplicates_empty_and_garbage() {
    let dup = "[[agency]]\nid = \"a\"\n[[agency]]\nid = \"b\"\n[[agency]]\nid = \"a\"\n";
    let err = registry::parse_agency_ids(Path::new("r.toml"), dup).unwrap_err();
    assert!(
        matches!(&err, CertError::RegistryEntry { entry: 3, id, reason, .. }
            if id == "a" && reason.contains("entry 1")),
        "{err:?}"
    );

    for empty in ["", "[meta]\nx = 1\n", "agency = []\n"] {
        let err = registry::parse_agency_ids(Path::new("r.toml"), empty).unwrap_err();
        assert!(matches!(err, CertError::RegistryEmpty { .. }), "{err:?}");
    }

    for garbage in [
        "[[agency]]\nname = \"no id\"\n",
        "[[agency]]\nid = 7\n",
        "not toml [",
    ] {
        let err = registry::parse_agency_ids(Path::new("r.toml"), garbage).unwrap_err();
        assert!(
            matches!(err, CertError::RegistryFile(FileError::Syntax { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains("r.toml"));
    }

    let err = read_agency_ids(Path::new("/nonexistent/liandong/reg.toml")).unwrap_err();
    assert!(matches!(
        err,
        CertError::RegistryFile(FileError::Read { .. })
    ));
    assert!(err.is_usage_error());
}

#[test]
fn write_atomic_replaces_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.txt");
    init::write_atomic(&path, b"one", false).unwrap();
    init::write_atomic(&path, b"two", true).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["f.txt"]);
}
