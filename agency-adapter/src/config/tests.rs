use super::*;

const FULL: &str = r#"
[gateway]
url = "https://127.0.0.1:7443"
server_name = "localhost"   # the name on the gateway's certificate
ca = "../pki/ca.crt"
cert = "../pki/agencies/cz-psb.crt"
key = "/etc/liandong/cz-psb.key"
"#;

fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    let path = dir.path().join("etc").join("adapter.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn settings(url: &str, ca: &str) -> GatewaySettings {
    GatewaySettings {
        url: url.into(),
        server_name: None,
        ca: ca.into(),
        cert: "file.crt".into(),
        key: "file.key".into(),
    }
}

#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let (dir, path) = write_config(FULL);
    let config = AdapterConfig::load(&path).unwrap();
    let etc = dir.path().join("etc");
    assert_eq!(
        config.gateway,
        GatewaySettings {
            url: "https://127.0.0.1:7443".into(),
            server_name: Some("localhost".into()),
            ca: etc.join("../pki/ca.crt"),
            cert: etc.join("../pki/agencies/cz-psb.crt"),
            // Absolute paths are kept as they are.
            key: PathBuf::from("/etc/liandong/cz-psb.key"),
        }
    );
}

#[test]
fn a_config_in_the_working_directory_keeps_paths_relative_to_it() {
    let config = AdapterConfig::parse(Path::new("adapter.toml"), FULL).unwrap();
    assert_eq!(config.gateway.ca, PathBuf::from("../pki/ca.crt"));
}

#[test]
fn server_name_is_optional() {
    let text = FULL.replace("server_name = \"localhost\"", "");
    let config = AdapterConfig::parse(Path::new("a.toml"), &text).unwrap();
    assert_eq!(config.gateway.server_name, None);
}

#[test]
fn a_missing_field_is_named_with_the_file() {
    for field in ["url", "ca", "cert", "key"] {
        let text: String = FULL
            .lines()
            .filter(|l| !l.starts_with(&format!("{field} =")))
            .collect::<Vec<_>>()
            .join("\n");
        let err = AdapterConfig::parse(Path::new("conf/adapter.toml"), &text).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Missing { field: f, .. } if *f == format!("gateway.{field}")),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("conf/adapter.toml: missing field `gateway.{field}`")
        );
    }
    let err = AdapterConfig::parse(Path::new("a.toml"), "").unwrap_err();
    assert_eq!(err.to_string(), "a.toml: missing field `gateway`");
}

#[test]
fn an_unknown_key_is_refused_with_its_place() {
    let text = FULL.replace("server_name =", "servername =");
    let err = AdapterConfig::parse(Path::new("a.toml"), &text).unwrap_err();
    let ConfigError::File(FileError::Syntax {
        location, reason, ..
    }) = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(location.line, 4);
    assert_eq!(location.table.as_deref(), Some("gateway"));
    assert!(reason.contains("servername"), "{reason}");
    let text = err.to_string();
    assert!(text.starts_with("a.toml:4:1: in [gateway]: "), "{text}");
}

#[test]
fn an_unknown_table_is_refused() {
    let text = format!("{FULL}\n[outbx]\ndir = \"x\"\n");
    let err = AdapterConfig::parse(Path::new("a.toml"), &text).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("outbx"), "{message}");
    assert!(message.starts_with("a.toml:"), "{message}");
}

#[test]
fn values_of_the_wrong_type_and_bad_toml_are_refused() {
    let text = FULL.replace("\"../pki/ca.crt\"", "42");
    let err = AdapterConfig::parse(Path::new("a.toml"), &text).unwrap_err();
    assert!(
        matches!(&err, ConfigError::File(FileError::Syntax { location, .. }) if location.line == 5),
        "{err:?}"
    );
    let err = AdapterConfig::parse(Path::new("a.toml"), "[gateway\n").unwrap_err();
    assert!(
        matches!(err, ConfigError::File(FileError::Syntax { .. })),
        "{err:?}"
    );
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let text = FULL.replace("https://127.0.0.1:7443", "http://127.0.0.1:7443");
    let err = AdapterConfig::parse(Path::new("a.toml"), &text).unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::Invalid {
                field: "gateway.url",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("https://"), "{err}");

    let text = FULL.replace("https://127.0.0.1:7443", "https://");
    let err = AdapterConfig::parse(Path::new("a.toml"), &text).unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::Invalid {
                field: "gateway.url",
                ..
            }
        ),
        "{err:?}"
    );

    let text = FULL.replace("\"localhost\"", "\"\"");
    let err = AdapterConfig::parse(Path::new("a.toml"), &text).unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::Invalid {
                field: "gateway.server_name",
                ..
            }
        ),
        "{err:?}"
    );

    let text = FULL.replace("\"../pki/ca.crt\"", "\"\"");
    let err = AdapterConfig::parse(Path::new("a.toml"), &text).unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::Invalid {
                field: "gateway.ca",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_unreadable_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = AdapterConfig::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::File(FileError::Read { .. })));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", path.display())),
        "{err}"
    );
}

fn flags(
    url: Option<&str>,
    ca: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
) -> PartialGateway {
    PartialGateway {
        url: url.map(Into::into),
        server_name: None,
        ca: ca.map(Into::into),
        cert: cert.map(Into::into),
        key: key.map(Into::into),
    }
}

#[test]
fn flags_override_the_file_and_the_file_fills_the_rest() {
    let (dir, path) = write_config(FULL);
    let etc = dir.path().join("etc");
    let overrides = flags(Some("https://127.0.0.1:9443"), None, Some("flag.crt"), None);
    let resolved = GatewaySettings::resolve(Some(&path), overrides).unwrap();
    assert_eq!(
        resolved,
        GatewaySettings {
            url: "https://127.0.0.1:9443".into(),
            server_name: Some("localhost".into()),
            ca: etc.join("../pki/ca.crt"),
            cert: "flag.crt".into(),
            key: "/etc/liandong/cz-psb.key".into(),
        }
    );

    let overrides = PartialGateway {
        server_name: Some("gw.example".into()),
        ..Default::default()
    };
    let resolved = GatewaySettings::resolve(Some(&path), overrides).unwrap();
    assert_eq!(resolved.server_name.as_deref(), Some("gw.example"));
    assert_eq!(resolved.url, "https://127.0.0.1:7443");
}

#[test]
fn flags_alone_replace_the_file() {
    let overrides = flags(
        Some("https://127.0.0.1:7443"),
        Some("ca.crt"),
        Some("a.crt"),
        Some("a.key"),
    );
    let resolved = GatewaySettings::resolve(None, overrides).unwrap();
    assert_eq!(
        resolved,
        GatewaySettings {
            url: "https://127.0.0.1:7443".into(),
            server_name: None,
            ca: "ca.crt".into(),
            cert: "a.crt".into(),
            key: "a.key".into(),
        }
    );
}

#[test]
fn flags_can_complete_a_partial_config_file() {
    let text = "[gateway]\nurl = \"https://127.0.0.1:7443\"\nca = \"ca.crt\"\n";
    let (dir, path) = write_config(text);
    // Loaded on its own, the file is incomplete...
    let err = AdapterConfig::load(&path).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Missing {
                field: "gateway.cert",
                ..
            }
        ),
        "{err:?}"
    );
    // ...but the flags may supply the rest.
    let overrides = flags(None, None, Some("a.crt"), Some("a.key"));
    let resolved = GatewaySettings::resolve(Some(&path), overrides).unwrap();
    assert_eq!(resolved.ca, dir.path().join("etc/ca.crt"));
    assert_eq!(resolved.key, PathBuf::from("a.key"));
    // Without them, the error names both the missing settings and the file.
    let err = GatewaySettings::resolve(Some(&path), PartialGateway::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "usage: no gateway.cert, gateway.key given: pass --cert FILE, --key FILE \
             or set them in {}",
            path.display()
        )
    );
    // A lenient read is no less strict about unknown keys.
    let (_dir, path) = write_config("[gateway]\nurl = \"https://a:1\"\nkye = \"k\"\n");
    let err = GatewaySettings::resolve(Some(&path), PartialGateway::default()).unwrap_err();
    assert!(
        matches!(err, ConfigError::File(FileError::Syntax { .. })),
        "{err:?}"
    );
}

#[test]
fn missing_settings_are_all_named() {
    let err = GatewaySettings::resolve(None, PartialGateway::default()).unwrap_err();
    let ConfigError::Incomplete { missing, config } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*config, None);
    let names: Vec<_> = missing.iter().map(|m| m.setting).collect();
    assert_eq!(
        names,
        ["gateway.url", "gateway.ca", "gateway.cert", "gateway.key"]
    );

    let overrides = flags(Some("https://127.0.0.1:7443"), None, Some("a.crt"), None);
    let err = GatewaySettings::resolve(None, overrides).unwrap_err();
    assert_eq!(
        err.to_string(),
        "usage: no gateway.ca, gateway.key given: \
         pass --ca FILE, --key FILE or a --config file that has them"
    );
}

#[test]
fn bad_flags_are_refused_naming_the_flag_before_the_file_is_read() {
    let absent = Path::new("/nonexistent/adapter.toml");
    let err = GatewaySettings::resolve(
        Some(absent),
        flags(Some("127.0.0.1:7443"), None, None, None),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidFlag {
                flag: "--gateway",
                ..
            }
        ),
        "{err:?}"
    );

    let overrides = PartialGateway {
        server_name: Some(String::new()),
        ..Default::default()
    };
    let err = GatewaySettings::resolve(None, overrides).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidFlag {
                flag: "--server-name",
                ..
            }
        ),
        "{err:?}"
    );

    let overrides = PartialGateway {
        key: Some(PathBuf::new()),
        ..Default::default()
    };
    let err = GatewaySettings::resolve(None, overrides).unwrap_err();
    assert!(
        matches!(err, ConfigError::InvalidFlag { flag: "--key", .. }),
        "{err:?}"
    );

    let err = GatewaySettings::resolve(Some(absent), PartialGateway::default()).unwrap_err();
    assert!(
        matches!(err, ConfigError::File(FileError::Read { .. })),
        "{err:?}"
    );
}

#[test]
fn a_complete_file_round_trips_through_partial_settings() {
    let full = settings("https://a:1", "ca.crt");
    let partial = PartialGateway::from(full.clone());
    assert_eq!(partial.clone().complete(None).unwrap(), full);
    assert_eq!(PartialGateway::default().over(partial.clone()), partial);
}

#[test]
fn the_example_dev_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev/adapter-cz-psb.toml");
    let config = AdapterConfig::load(&path).unwrap();
    let dev = path.parent().unwrap();
    assert_eq!(
        config.gateway,
        GatewaySettings {
            url: "https://127.0.0.1:7443".into(),
            server_name: Some("localhost".into()),
            ca: dev.join("pki/ca.crt"),
            cert: dev.join("pki/agencies/cz-psb.crt"),
            key: dev.join("pki/agencies/cz-psb.key"),
        }
    );
}
