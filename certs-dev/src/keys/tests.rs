//! The key files `init` writes (PKCS#8 v1 PEM beside ring's v2 DER), keys
//! written into the registry, and a rollover from start to end.

use std::path::{Path, PathBuf};
use std::process::Command;

use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ring::signature::{ED25519, UnparsedPublicKey};

use super::*;

/// A registry with comments in the places people put them.
const REGISTRY: &str = r#"# Test registry: this comment must survive.

[[agency]]
# The environment bureau.
id = "cz-eeb"
name = "长治市生态环境局"
role = "ENVIRONMENT"
region = "140400"
clearance = "CONFIDENTIAL"   # trailing comment

[[agency]]
id = "cz-psb"
name = "长治市公安局"
role = "POLICE"
region = "140400"
clearance = "CONFIDENTIAL"
signing_public_key = "00000000000000000000000000000000000000000000000000000000000000aa"
"#;

/// A registry and a PKI made by `init` for it.
fn pki() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("agencies.toml");
    std::fs::write(&registry, REGISTRY).unwrap();
    let out = dir.path().join("pki");
    crate::init(&registry, &out, false).unwrap();
    (dir, registry, out)
}

fn public_hex(path: &Path) -> String {
    SigningKey::load(path).unwrap().public_key_hex()
}

/// The registry's parsed `[[agency]]` entry for `id`.
fn entry(registry: &Path, id: &str) -> toml::Table {
    let text = std::fs::read_to_string(registry).unwrap();
    let parsed: toml::Table = text.parse().unwrap();
    parsed["agency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_table().unwrap().clone())
        .find(|e| e["id"].as_str() == Some(id))
        .unwrap()
}

fn keys_of(registry: &Path, id: &str) -> Vec<String> {
    entry(registry, id)["signing_public_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

fn openssl_available() -> bool {
    Command::new("openssl").arg("version").output().is_ok()
}

#[test]
fn signing_key_pem_is_pkcs8_v1() {
    let (_dir, _registry, out) = pki();
    for (pem, pk8) in [
        (
            out.join("agencies/cz-psb.signing.pem"),
            out.join("agencies/cz-psb.signing.pk8"),
        ),
        (
            out.join("gateway.signing.pem"),
            out.join("gateway.signing.pk8"),
        ),
    ] {
        let text = std::fs::read_to_string(&pem).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        assert!(text.trim_end().ends_with("-----END PRIVATE KEY-----"));
        // RFC 8410: version 0 (v1), id-Ed25519, the seed in an OCTET
        // STRING inside the OCTET STRING, and no public key.
        let (label, der) = ed25519_dalek::pkcs8::Document::from_pem(&text).unwrap();
        assert_eq!(label, "PRIVATE KEY");
        let der = der.as_bytes();
        assert_eq!(
            &der[..16],
            [
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20
            ],
            "not the RFC 8410 v1 encoding"
        );
        assert_eq!(der.len(), 48);
        let info = ed25519_dalek::pkcs8::KeypairBytes::from_pkcs8_der(der).unwrap();
        assert!(info.public_key.is_none());
        // The same key as the v2 DER beside it.
        assert_eq!(public_hex(&pem), public_hex(&pk8));
        // Owner-only, like every private key file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&pem).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", pem.display());
        }
        // The public PEM is a SubjectPublicKeyInfo of the same key.
        let public_pem = PathBuf::from(format!(
            "{}.pub.pem",
            pem.display().to_string().trim_end_matches(".pem")
        ));
        let spki = std::fs::read_to_string(&public_pem).unwrap();
        assert!(spki.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{spki}");
        let (_, spki_der) = ed25519_dalek::pkcs8::Document::from_pem(&spki).unwrap();
        assert_eq!(
            hex::encode(&spki_der.as_bytes()[12..]),
            public_hex(&pk8),
            "the SPKI carries the raw public key after its 12-byte header"
        );
    }
}

#[test]
fn signing_key_pem_loads_in_openssl() {
    if !openssl_available() {
        eprintln!("SKIPPED signing_key_pem_loads_in_openssl: openssl is not installed");
        return;
    }
    let (dir, _registry, out) = pki();
    let pem = out.join("agencies/cz-eeb.signing.pem");
    let check = Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "openssl pkey refused {}: {}",
        pem.display(),
        String::from_utf8_lossy(&check.stderr)
    );
    // OpenSSL signs with it, and ring verifies with the registered key.
    let message = dir.path().join("message");
    std::fs::write(&message, b"liandong.v1.Notification\nbytes").unwrap();
    let signature = dir.path().join("signature");
    let sign = Command::new("openssl")
        .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
        .arg(&pem)
        .arg("-in")
        .arg(&message)
        .arg("-out")
        .arg(&signature)
        .output()
        .unwrap();
    assert!(
        sign.status.success(),
        "{}",
        String::from_utf8_lossy(&sign.stderr)
    );
    let key = SigningKey::load(&out.join("agencies/cz-eeb.signing.pk8")).unwrap();
    UnparsedPublicKey::new(&ED25519, key.public_key())
        .verify(
            &std::fs::read(&message).unwrap(),
            &std::fs::read(&signature).unwrap(),
        )
        .expect("ring verifies what OpenSSL signed with the PEM key");
    // The public key PEM too.
    let public = Command::new("openssl")
        .args(["pkey", "-pubin", "-noout", "-in"])
        .arg(out.join("agencies/cz-eeb.signing.pub.pem"))
        .output()
        .unwrap();
    assert!(
        public.status.success(),
        "{}",
        String::from_utf8_lossy(&public.stderr)
    );
}

#[test]
fn init_register_keys_writes_registry() {
    let (_dir, registry, out) = pki();
    let ids = register_keys(&registry, &out).unwrap();
    assert_eq!(ids, ["cz-eeb", "cz-psb"]);
    let text = std::fs::read_to_string(&registry).unwrap();
    // Comments and layout kept.
    for kept in [
        "# Test registry: this comment must survive.\n",
        "# The environment bureau.\n",
        "clearance = \"CONFIDENTIAL\"   # trailing comment\n",
    ] {
        assert!(text.contains(kept), "lost {kept:?}:\n{text}");
    }
    for id in ids {
        let expected = public_hex(&out.join(format!("agencies/{id}.signing.pk8")));
        assert_eq!(keys_of(&registry, &id), [expected]);
        // The legacy single key is replaced, not kept beside the list.
        assert!(!entry(&registry, &id).contains_key("signing_public_key"));
    }
    let parsed: toml::Table = text.parse().unwrap();
    assert_eq!(
        parsed["gateway"]["signing_public_key"].as_str().unwrap(),
        public_hex(&out.join("gateway.signing.pk8"))
    );
    // Still a registry the id reader accepts.
    assert_eq!(crate::read_agency_ids(&registry).unwrap().len(), 2);

    // Again after `init --force`: the new keys replace the old ones.
    let before = keys_of(&registry, "cz-eeb");
    crate::init(&registry, &out, true).unwrap();
    register_keys(&registry, &out).unwrap();
    let after = keys_of(&registry, "cz-eeb");
    assert_ne!(before, after);
    assert_eq!(
        after,
        [public_hex(&out.join("agencies/cz-eeb.signing.pk8"))]
    );
    let text = std::fs::read_to_string(&registry).unwrap();
    assert_eq!(text.matches("[gateway]").count(), 1, "{text}");
    // No temporary file left beside the registry.
    let leftovers: Vec<_> = std::fs::read_dir(registry.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn rotate_key_keeps_old_and_new_keys() {
    let (_dir, registry, out) = pki();
    register_keys(&registry, &out).unwrap();
    let old = public_hex(&out.join("agencies/cz-psb.signing.pk8"));
    let old_der = std::fs::read(out.join("agencies/cz-psb.signing.pk8")).unwrap();
    let other_before = keys_of(&registry, "cz-eeb");

    let rotation = rotate_key(&registry, &out, "cz-psb").unwrap();
    let new = public_hex(&out.join("agencies/cz-psb.signing.pk8"));
    assert_ne!(new, old);
    assert_eq!(rotation.new_key, new);
    assert_eq!(rotation.old_key, old);
    assert_eq!(keys_of(&registry, "cz-psb"), [new.clone(), old.clone()]);
    assert_eq!(
        keys_of(&registry, "cz-eeb"),
        other_before,
        "only cz-psb changes"
    );
    // The old key is kept, byte for byte and as PEM; the new one has
    // every form.
    assert_eq!(
        std::fs::read(out.join("agencies/cz-psb.signing.previous.pk8")).unwrap(),
        old_der
    );
    assert_eq!(
        public_hex(&out.join("agencies/cz-psb.signing.previous.pem")),
        old
    );
    assert_eq!(public_hex(&out.join("agencies/cz-psb.signing.pem")), new);
    assert_eq!(
        std::fs::read_to_string(out.join("agencies/cz-psb.signing.pub")).unwrap(),
        format!("{new}\n")
    );

    // A second rotation before the first is retired is refused and
    // changes nothing.
    let registry_before = std::fs::read(&registry).unwrap();
    let error = rotate_key(&registry, &out, "cz-psb").unwrap_err();
    assert!(
        matches!(error, CertError::RolloverInProgress { count: 2, .. }),
        "{error:?}"
    );
    assert!(error.is_usage_error());
    assert_eq!(std::fs::read(&registry).unwrap(), registry_before);
    assert_eq!(public_hex(&out.join("agencies/cz-psb.signing.pk8")), new);

    // An agency the registry does not list is refused.
    let error = rotate_key(&registry, &out, "cz-nobody").unwrap_err();
    assert!(
        matches!(error, CertError::AgencyNotInRegistry { .. }),
        "{error:?}"
    );
}

#[test]
fn retire_key_keeps_only_current() {
    let (_dir, registry, out) = pki();
    register_keys(&registry, &out).unwrap();
    let old = public_hex(&out.join("agencies/cz-psb.signing.pk8"));
    rotate_key(&registry, &out, "cz-psb").unwrap();
    let new = public_hex(&out.join("agencies/cz-psb.signing.pk8"));

    let retirement = retire_key(&registry, &out, "cz-psb").unwrap();
    assert_eq!(retirement.kept, new);
    assert_eq!(retirement.retired, [old]);
    assert_eq!(keys_of(&registry, "cz-psb"), [new.as_str()]);
    assert_eq!(retirement.deleted.len(), 2);
    assert!(!out.join("agencies/cz-psb.signing.previous.pk8").exists());
    assert!(!out.join("agencies/cz-psb.signing.previous.pem").exists());
    // Retiring again is harmless, and a new rollover can start.
    retire_key(&registry, &out, "cz-psb").unwrap();
    assert_eq!(keys_of(&registry, "cz-psb"), [new]);
    rotate_key(&registry, &out, "cz-psb").unwrap();
    assert_eq!(keys_of(&registry, "cz-psb").len(), 2);

    // A current key the registry does not list is never made the only
    // one: retiring would lock the agency out.
    let (_dir2, registry2, out2) = pki();
    let before = std::fs::read(&registry2).unwrap();
    let error = retire_key(&registry2, &out2, "cz-psb").unwrap_err();
    assert!(
        matches!(error, CertError::KeyNotRegistered { .. }),
        "{error:?}"
    );
    assert_eq!(std::fs::read(&registry2).unwrap(), before);
}
