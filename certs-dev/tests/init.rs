//! Integration tests of `liandong_certs::init` and the `liandong-certs`
//! binary: files written, permissions, refusal to overwrite, `--force`, and
//! exit codes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use liandong_certs::{CertError, SigningKey, init};
use ring::signature::{ED25519, UnparsedPublicKey};

const REGISTRY: &str = r#"
[[agency]]
id = "cz-eeb"
name = "长治市生态环境局"
role = "ENVIRONMENT"
region = "140400"
clearance = "CONFIDENTIAL"

[[agency]]
id = "cz-police"
name = "长治市公安局"
role = "POLICE"
"#;

fn write_registry(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("agencies.toml");
    fs::write(&path, text).unwrap();
    path
}

fn expected_files(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [
        "ca.crt",
        "ca.key",
        "gateway.crt",
        "gateway.key",
        "gateway.signing.pk8",
        "gateway.signing.pub",
        "gateway.signing.pem",
        "gateway.signing.pub.pem",
    ]
    .iter()
    .map(|f| out.join(f))
    .collect();
    for id in ["cz-eeb", "cz-police"] {
        for ext in [
            "crt",
            "key",
            "signing.pk8",
            "signing.pub",
            "signing.pem",
            "signing.pub.pem",
        ] {
            v.push(out.join("agencies").join(format!("{id}.{ext}")));
        }
    }
    v.push(out.join("ca.crl"));
    v
}

fn snapshot(files: &[PathBuf]) -> BTreeMap<PathBuf, Vec<u8>> {
    files
        .iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect()
}

fn is_secret(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_str().unwrap();
    name.ends_with(".key") || name.ends_with(".pk8") || name.ends_with(".signing.pem")
}

#[test]
fn init_writes_everything_refuses_then_forces() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_registry(tmp.path(), REGISTRY);
    let out = tmp.path().join("pki").join("nested");

    let report = init(&registry, &out, false).unwrap();
    let expected = expected_files(&out);
    assert_eq!(report.files, expected);
    assert_eq!(report.agency_ids, vec!["cz-eeb", "cz-police"]);
    for f in &expected {
        let bytes = fs::read(f).unwrap();
        assert!(!bytes.is_empty(), "{} is empty", f.display());
    }

    // PEM contents.
    let pem = |name: &str| fs::read_to_string(out.join(name)).unwrap();
    assert!(pem("ca.crt").starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(pem("ca.key").starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(pem("gateway.crt").starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(pem("agencies/cz-eeb.key").starts_with("-----BEGIN PRIVATE KEY-----"));

    // The agency certificate names the agency and is signed by the CA.
    let ca_pem = pem("ca.crt");
    let (_, ca) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).unwrap();
    let ca = ca.parse_x509().unwrap();
    let agency_pem = pem("agencies/cz-police.crt");
    let (_, agency) = x509_parser::pem::parse_x509_pem(agency_pem.as_bytes()).unwrap();
    let agency = agency.parse_x509().unwrap();
    agency.verify_signature(Some(ca.public_key())).unwrap();
    let san = agency.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![x509_parser::extensions::GeneralName::URI(
            "urn:liandong:agency:cz-police"
        )]
    );

    // The CA key can issue more certificates later.
    let loaded = liandong_certs::Authority::from_pem(&ca_pem, &pem("ca.key")).unwrap();
    let later = loaded.agency("later").unwrap();
    let (_, later) = x509_parser::pem::parse_x509_pem(later.cert_pem.as_bytes()).unwrap();
    later
        .parse_x509()
        .unwrap()
        .verify_signature(Some(ca.public_key()))
        .unwrap();

    // Signing key files: PKCS#8 and hex public key agree.
    let pk8 = fs::read(out.join("agencies/cz-eeb.signing.pk8")).unwrap();
    let pub_line = pem("agencies/cz-eeb.signing.pub");
    assert!(pub_line.ends_with('\n') && pub_line.lines().count() == 1);
    let hex = pub_line.trim_end();
    assert_eq!(hex.len(), 64);
    assert_eq!(hex, hex.to_lowercase());
    let key = SigningKey::from_pkcs8_der(&pk8).unwrap();
    assert_eq!(key.public_key_hex(), hex);
    let raw: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pk8).unwrap();
    let sig = pair.sign(b"hello");
    UnparsedPublicKey::new(&ED25519, &raw)
        .verify(b"hello", sig.as_ref())
        .unwrap();
    // Two agencies get different signing keys.
    assert_ne!(pub_line, pem("agencies/cz-police.signing.pub"));
    // The gateway's own signing key: its public key file matches it, and
    // it is not an agency's.
    let gateway_key =
        SigningKey::from_pkcs8_der(&fs::read(out.join("gateway.signing.pk8")).unwrap()).unwrap();
    let gateway_pub = pem("gateway.signing.pub");
    assert_eq!(format!("{}\n", gateway_key.public_key_hex()), gateway_pub);
    assert_ne!(gateway_pub, pub_line);

    // Permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in &expected {
            let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
            if is_secret(f) {
                assert_eq!(mode, 0o600, "{}", f.display());
            } else {
                assert_eq!(mode & 0o077 & !0o044, 0, "{}: {mode:o}", f.display());
            }
        }
    }

    // No temp files left behind.
    for dir in [out.clone(), out.join("agencies")] {
        for entry in fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(!name.to_string_lossy().starts_with('.'), "{name:?}");
        }
    }

    // Second run without force refuses and leaves every file unchanged.
    let before = snapshot(&expected);
    let err = init(&registry, &out, false).unwrap_err();
    match &err {
        CertError::WouldOverwrite { paths } => assert_eq!(paths, &expected),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_usage_error());
    assert_eq!(snapshot(&expected), before);

    // Even a single existing file blocks init.
    fs::remove_file(&expected[0]).unwrap();
    let err = init(&registry, &out, false).unwrap_err();
    assert!(
        matches!(err, CertError::WouldOverwrite { ref paths } if paths.len() == expected.len() - 1)
    );
    assert!(!expected[0].exists(), "nothing written on refusal");

    // With force, everything is rewritten with fresh keys.
    let report = init(&registry, &out, true).unwrap();
    assert_eq!(report.files, expected);
    let after = snapshot(&expected);
    for f in &expected[1..] {
        assert_ne!(after[f], before[f], "{} not rewritten", f.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in expected.iter().filter(|f| is_secret(f)) {
            let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
}

#[test]
fn force_tightens_permissions_of_preexisting_key_files() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_registry(tmp.path(), REGISTRY);
    let out = tmp.path().join("pki");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("ca.key"), "old").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(out.join("ca.key"), fs::Permissions::from_mode(0o644)).unwrap();
    }
    init(&registry, &out, true).unwrap();
    assert_ne!(fs::read(out.join("ca.key")).unwrap(), b"old");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(out.join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn init_with_bad_registry_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_registry(
        tmp.path(),
        "[[agency]]\nid = \"good\"\n[[agency]]\nid = \"9bad\"\n",
    );
    let out = tmp.path().join("pki");
    let err = init(&registry, &out, false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("agencies.toml") && msg.contains("entry 2") && msg.contains("9bad"));
    assert!(!out.exists());
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_liandong-certs"))
}

#[test]
fn cli_init_prints_files_and_uses_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_registry(tmp.path(), REGISTRY);
    let out = tmp.path().join("pki");

    let run = |extra: &[&str]| {
        bin()
            .arg("init")
            .arg("--registry")
            .arg(&registry)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };

    let ok = run(&[]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let stdout = String::from_utf8(ok.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 22, "{stdout}");
    for (line, expected) in lines.iter().zip(expected_files(&out)) {
        assert_eq!(Path::new(line), expected);
    }
    assert!(lines[21].contains("21 files") && lines[21].contains("2 agencies"));
    assert!(!stdout.contains("PRIVATE KEY"));

    let refused = run(&[]);
    assert_eq!(refused.status.code(), Some(64));
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");

    let forced = run(&["--force"]);
    assert_eq!(forced.status.code(), Some(0));

    let missing = bin()
        .args(["init", "--registry", "/nonexistent/reg.toml", "--out"])
        .arg(tmp.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/reg.toml"));

    let usage = bin().args(["init", "--out", "x"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(64));
    let help = bin().arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
}

#[test]
fn cli_other_failures_exit_1() {
    // The output "directory" is a regular file: an I/O failure, not usage.
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_registry(tmp.path(), REGISTRY);
    let out = tmp.path().join("not-a-dir");
    fs::write(&out, "x").unwrap();
    let res = bin()
        .arg("init")
        .arg("--registry")
        .arg(&registry)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1), "{res:?}");
}

#[test]
fn cli_registers_rotates_and_retires_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_registry(tmp.path(), REGISTRY);
    let out = tmp.path().join("pki");
    let untouched = fs::read(&registry).unwrap();

    let run = |args: &[&str]| {
        let output = bin().args(args).output().unwrap();
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let registry_arg = registry.to_str().unwrap();
    let out_arg = out.to_str().unwrap();

    // Without the flag the registry is not touched.
    let (code, _, stderr) = run(&["init", "--registry", registry_arg, "--out", out_arg]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(fs::read(&registry).unwrap(), untouched);

    let (code, stdout, stderr) = run(&[
        "init",
        "--registry",
        registry_arg,
        "--out",
        out_arg,
        "--force",
        "--register-keys",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("registered the signing keys"), "{stdout}");
    let key = |id: &str| {
        SigningKey::load(&out.join("agencies").join(format!("{id}.signing.pk8")))
            .unwrap()
            .public_key_hex()
    };
    let first = key("cz-police");
    let text = fs::read_to_string(&registry).unwrap();
    assert!(
        text.contains(&format!("signing_public_keys = [\"{first}\"]")),
        "{text}"
    );

    let (code, stdout, stderr) = run(&[
        "rotate-key",
        "--out",
        out_arg,
        "--registry",
        registry_arg,
        "--agency",
        "cz-police",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let second = key("cz-police");
    assert!(
        stdout.contains(&second) && stdout.contains(&first),
        "{stdout}"
    );
    assert!(!stdout.contains("PRIVATE KEY"));
    let text = fs::read_to_string(&registry).unwrap();
    assert!(
        text.contains(&format!(
            "signing_public_keys = [\"{second}\", \"{first}\"]"
        )),
        "{text}"
    );

    // A second rotation before retiring is a usage error (64).
    let (code, _, stderr) = run(&[
        "rotate-key",
        "--out",
        out_arg,
        "--registry",
        registry_arg,
        "--agency",
        "cz-police",
    ]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("retire-key"), "{stderr}");

    let (code, _, stderr) = run(&[
        "retire-key",
        "--registry",
        registry_arg,
        "--agency",
        "cz-police",
        "--out",
        out_arg,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let text = fs::read_to_string(&registry).unwrap();
    assert!(
        text.contains(&format!("signing_public_keys = [\"{second}\"]")),
        "{text}"
    );
}
