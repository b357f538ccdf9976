use super::*;
use crate::reports::{CrimeThreshold, Schedule, SupervisionSettings};

const GOOD: &str = r#"
listen = "127.0.0.1:7443"
registry = "agencies.toml"

[tls]
ca = "pki/ca.crt"
cert = "pki/gateway.crt"
key = "/etc/liandong/gateway.key"

[database]
url = "sqlite://data/liandong.db"

[signing]
key = "pki/gateway.signing.pk8"
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let config = GatewayConfig::parse(GOOD, Path::new("/srv/ld/gateway.toml"), no_env).unwrap();
    assert_eq!(config.registry, Path::new("/srv/ld/agencies.toml"));
    assert_eq!(config.tls.ca, Path::new("/srv/ld/pki/ca.crt"));
    assert_eq!(config.tls.key, Path::new("/etc/liandong/gateway.key"));
    assert_eq!(config.database_url, "sqlite:///srv/ld/data/liandong.db");
    assert_eq!(config.max_message_bytes, 256 * 1024);
    assert_eq!(
        config.signing_key,
        Path::new("/srv/ld/pki/gateway.signing.pk8")
    );
    assert_eq!(config.mechanism, MechanismFiles::default());
}

#[test]
fn signatures_are_required_only_when_the_signing_section_says_so() {
    let config = GatewayConfig::parse(GOOD, Path::new("g.toml"), no_env).unwrap();
    assert!(!config.require_signatures, "off by default");
    let on = GOOD.replace(
        "[signing]\nkey = \"pki/gateway.signing.pk8\"\n",
        "[signing]\nkey = \"pki/gateway.signing.pk8\"\nrequire_signatures = true\n",
    );
    let config = GatewayConfig::parse(&on, Path::new("g.toml"), no_env).unwrap();
    assert!(config.require_signatures);
    let mistyped = on.replace("require_signatures = true", "require_signatures = \"yes\"");
    assert!(GatewayConfig::parse(&mistyped, Path::new("g.toml"), no_env).is_err());
}

#[test]
fn the_signing_key_is_required() {
    let bad = GOOD.replace("[signing]\nkey = \"pki/gateway.signing.pk8\"\n", "");
    let err = GatewayConfig::parse(&bad, Path::new("g.toml"), no_env)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("g.toml:") && err.contains("missing field `signing`"),
        "{err}"
    );
}

#[test]
fn mechanism_files_resolve_and_the_time_zone_is_checked() {
    let set = format!(
        "{GOOD}\n[mechanism]\ndeadlines = \"rules/deadlines.toml\"\ncalendar = [\"cal/2028.toml\", \"/etc/ld/2029.toml\"]\ntime_zone = \"Asia/Urumqi\"\n"
    );
    let config = GatewayConfig::parse(&set, Path::new("/srv/ld/gateway.toml"), no_env).unwrap();
    assert_eq!(
        config.mechanism,
        MechanismFiles {
            deadlines: Some("/srv/ld/rules/deadlines.toml".into()),
            calendar: vec!["/srv/ld/cal/2028.toml".into(), "/etc/ld/2029.toml".into()],
            time_zone: "Asia/Urumqi".into(),
        }
    );
    let bad = format!("{GOOD}\n[mechanism]\ntime_zone = \"Asia/Beijing\"\n");
    let err = GatewayConfig::parse(&bad, Path::new("g.toml"), no_env)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "g.toml: mechanism.time_zone: \"Asia/Beijing\" is not a time zone of the bundled database (e.g. Asia/Shanghai)"
    );
}

#[test]
fn environment_overrides_listen_and_database() {
    let env = |key: &str| match key {
        ENV_LISTEN => Some("127.0.0.1:0".to_owned()),
        ENV_DATABASE_URL => Some("postgres://root@127.0.0.1/test".to_owned()),
        _ => None,
    };
    let config = GatewayConfig::parse(GOOD, Path::new("/srv/gateway.toml"), env).unwrap();
    assert_eq!(config.listen.port(), 0);
    assert_eq!(config.database_url, "postgres://root@127.0.0.1/test");
}

#[test]
fn errors_name_the_file_and_field() {
    let bad = GOOD.replace("127.0.0.1:7443", "localhost");
    let err = GatewayConfig::parse(&bad, Path::new("g.toml"), no_env)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("g.toml: listen: "), "{err}");
    let bad = GOOD.replace("sqlite://data/liandong.db", "mysql://x");
    let err = GatewayConfig::parse(&bad, Path::new("g.toml"), no_env)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("g.toml: database.url: "), "{err}");
    let env = |key: &str| (key == ENV_LISTEN).then(|| "nonsense".to_owned());
    let err = GatewayConfig::parse(GOOD, Path::new("g.toml"), env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("LIANDONG_LISTEN"), "{err}");
    let bad = format!("{GOOD}\n[limits]\nmax_message_bytes = 1\n");
    let err = GatewayConfig::parse(&bad, Path::new("g.toml"), no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.max_message_bytes"), "{err}");
}

#[test]
fn unknown_keys_are_refused() {
    let bad = GOOD.replace("[database]", "[database]\nurll = \"x\"");
    assert!(matches!(
        GatewayConfig::parse(&bad, Path::new("g.toml"), no_env),
        Err(ConfigError::File(FileError::Syntax { .. }))
    ));
}

#[test]
fn delivery_settings_and_caps_have_defaults_and_are_validated() {
    let config = GatewayConfig::parse(GOOD, Path::new("g.toml"), no_env).unwrap();
    assert_eq!(config.stall_timeout, Duration::from_secs(30));
    assert_eq!(config.cursor_flush, Duration::from_secs(1));
    assert_eq!(config.subscription_lease, Duration::from_secs(10));
    assert_eq!(config.max_subscriptions_per_agency, 100);
    assert_eq!(config.max_streams_per_agency, 100);
    let set = format!(
        "{GOOD}\n[limits]\nmax_subscriptions_per_agency = 3\nmax_streams_per_agency = 2\n\
         [delivery]\nstall_timeout_seconds = 2\ncursor_flush_ms = 50\n\
         subscription_lease_seconds = 3\n"
    );
    let config = GatewayConfig::parse(&set, Path::new("g.toml"), no_env).unwrap();
    assert_eq!(config.stall_timeout, Duration::from_secs(2));
    assert_eq!(config.cursor_flush, Duration::from_millis(50));
    assert_eq!(config.subscription_lease, Duration::from_secs(3));
    assert_eq!(config.max_subscriptions_per_agency, 3);
    assert_eq!(config.max_streams_per_agency, 2);
    for (table, key, value) in [
        ("limits", "max_subscriptions_per_agency", "0"),
        ("limits", "max_streams_per_agency", "0"),
        ("delivery", "stall_timeout_seconds", "0"),
        ("delivery", "cursor_flush_ms", "1"),
        ("delivery", "subscription_lease_seconds", "1"),
        ("delivery", "subscription_lease_seconds", "301"),
    ] {
        let bad = format!("{GOOD}\n[{table}]\n{key} = {value}\n");
        let err = GatewayConfig::parse(&bad, Path::new("g.toml"), no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("g.toml: {table}.{key}: ")),
            "{err}"
        );
    }
}

#[test]
fn report_schedule_and_supervision_default_to_the_documented_values() {
    let config = GatewayConfig::parse(GOOD, Path::new("g.toml"), no_env).unwrap();
    assert_eq!(config.report_schedule, Schedule::Monthly);
    assert_eq!(config.supervision, SupervisionSettings::default());
    assert_eq!(
        config.supervision.crime_thresholds,
        [CrimeThreshold {
            measurement: "hazardous_waste_tonnes".into(),
            minimum: 3.0
        }]
    );
    let text = format!(
        "{GOOD}\n[reports]\nschedule = \"weekly\"\n\n[supervision]\nfiled_idle_days = 90\n\n\
         [supervision.crime_thresholds]\nhazardous_waste_tonnes = 2.5\nmercury_discharge_kilograms = 1\n"
    );
    let config = GatewayConfig::parse(&text, Path::new("g.toml"), no_env).unwrap();
    assert_eq!(config.report_schedule, Schedule::Weekly);
    assert_eq!(config.supervision.filed_idle_days, 90);
    let names: Vec<(&str, f64)> = config
        .supervision
        .crime_thresholds
        .iter()
        .map(|t| (t.measurement.as_str(), t.minimum))
        .collect();
    assert_eq!(
        names,
        [
            ("hazardous_waste_tonnes", 2.5),
            ("mercury_discharge_kilograms", 1.0)
        ]
    );
}

#[test]
fn bad_report_and_supervision_settings_are_refused_by_name() {
    let refused = |extra: &str| {
        GatewayConfig::parse(&format!("{GOOD}\n{extra}"), Path::new("g.toml"), no_env)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refused("[reports]\nschedule = \"daily\"\n"),
        "g.toml: reports.schedule: \"daily\" is not one of \"monthly\", \"weekly\", \"off\""
    );
    assert_eq!(
        refused("[supervision]\nfiled_idle_days = 0\n"),
        "g.toml: supervision.filed_idle_days: must be between 1 and 3650"
    );
    assert_eq!(
        refused("[supervision.crime_thresholds]\nhazardous_waste_tonnes = 0\n"),
        "g.toml: supervision.crime_thresholds.hazardous_waste_tonnes: must be a number above 0"
    );
    assert_eq!(
        refused("[supervision.crime_thresholds]\nTonnes = 3\n"),
        "g.toml: supervision.crime_thresholds.Tonnes: a measurement name is lower-case a-z, \
         0-9 and _, ending in its unit (e.g. hazardous_waste_tonnes)"
    );
    assert_eq!(
        refused("[supervision.crime_thresholds]\nwaste = 3\n"),
        "g.toml: supervision.crime_thresholds.waste: a measurement name is lower-case a-z, \
         0-9 and _, ending in its unit (e.g. hazardous_waste_tonnes)"
    );
    let err = refused("[supervision.crime_thresholds]\nhazardous_waste_tonnes = \"3\"\n");
    assert!(err.contains("crime_thresholds"), "{err}");
    let err = refused("[reports]\nfrequency = \"monthly\"\n");
    assert!(err.contains("frequency"), "{err}");
}

#[test]
fn audit_settings_have_defaults_and_are_validated() {
    let config = GatewayConfig::parse(GOOD, Path::new("/srv/ld/gateway.toml"), no_env).unwrap();
    assert_eq!(
        config.audit,
        AuditSettings {
            checkpoint_rows: 1000,
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_file: PathBuf::from("/srv/ld/data/liandong.db.audit-checkpoint.json"),
            startup_check_rows: 1000,
        }
    );
    let postgres = GOOD.replace("sqlite://data/liandong.db", "postgres://db/ld");
    let config =
        GatewayConfig::parse(&postgres, Path::new("/srv/ld/gateway.toml"), no_env).unwrap();
    assert_eq!(
        config.audit.checkpoint_file,
        Path::new("/srv/ld/audit-checkpoint.json")
    );
    let set = format!(
        "{GOOD}\n[audit]\ncheckpoint_rows = 5\ncheckpoint_seconds = 2\n\
         checkpoint_file = \"ship/cp.json\"\nstartup_check_rows = 0\n"
    );
    let config = GatewayConfig::parse(&set, Path::new("/srv/ld/gateway.toml"), no_env).unwrap();
    assert_eq!(
        config.audit,
        AuditSettings {
            checkpoint_rows: 5,
            checkpoint_interval: Duration::from_secs(2),
            checkpoint_file: PathBuf::from("/srv/ld/ship/cp.json"),
            startup_check_rows: 0,
        }
    );
    for (key, value) in [("checkpoint_rows", "0"), ("checkpoint_seconds", "0")] {
        let bad = format!("{GOOD}\n[audit]\n{key} = {value}\n");
        let err = GatewayConfig::parse(&bad, Path::new("g.toml"), no_env)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("g.toml: audit.{key}: ")), "{err}");
    }
}

#[test]
fn the_production_example_requires_signatures_on_postgresql() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/production/gateway.toml"
    ));
    let config = GatewayConfig::load(path, no_env).unwrap();
    assert!(config.require_signatures);
    assert!(config.database_url.starts_with("postgres://"));
    assert_eq!(
        config.tls.ca,
        Path::new("/etc/liandong/tls/agencies-ca.pem")
    );
}

#[test]
fn publish_rates_default_to_50_per_second_with_a_burst_of_200() {
    let config = GatewayConfig::parse(GOOD, Path::new("/srv/ld/gateway.toml"), no_env).unwrap();
    assert_eq!(config.publish_rate.default.per_second.get(), 50);
    assert_eq!(config.publish_rate.default.burst.get(), 200);
    assert!(config.publish_rate.agencies.is_empty());
}

#[test]
fn an_agency_may_have_a_publish_rate_of_its_own() {
    let text = format!(
        "{GOOD}\n[limits]\npublish_per_second = 20\n\n[limits.agency.cz-psb]\npublish_burst = 1000\n"
    );
    let config = GatewayConfig::parse(&text, Path::new("/srv/ld/gateway.toml"), no_env).unwrap();
    assert_eq!(config.publish_rate.default.per_second.get(), 20);
    let psb = AgencyId::parse("agency", "cz-psb").unwrap();
    let own = config.publish_rate.agencies[&psb];
    assert_eq!(own.burst.get(), 1000);
    assert_eq!(own.per_second.get(), 20, "the unset value is the default");
}

#[test]
fn unusable_publish_rates_are_refused_by_name() {
    for (limits, field) in [
        ("publish_per_second = 0", "limits.publish_per_second"),
        ("publish_burst = 0", "limits.publish_burst"),
        ("publish_burst = 1000001", "limits.publish_burst"),
        (
            "[limits.agency.cz-psb]\npublish_per_second = 0",
            "limits.agency.cz-psb.publish_per_second",
        ),
        (
            "[limits.agency.\"Not An Id\"]\npublish_burst = 5",
            "limits.agency.Not An Id",
        ),
    ] {
        let text = format!("{GOOD}\n[limits]\n{limits}\n");
        let error = GatewayConfig::parse(&text, Path::new("/srv/ld/gateway.toml"), no_env)
            .unwrap_err()
            .to_string();
        assert!(error.contains(&format!("{field}:")), "{limits}: {error}");
    }
    let text = format!("{GOOD}\n[limits.agency.cz-psb]\npublish_rate = 5\n");
    assert!(
        GatewayConfig::parse(&text, Path::new("/srv/ld/gateway.toml"), no_env).is_err(),
        "an unknown key in an agency's table is refused"
    );
}

#[test]
fn tls_crls_and_connection_limits_are_read_with_defaults() {
    let config = GatewayConfig::parse(GOOD, Path::new("/srv/ld/gateway.toml"), no_env).unwrap();
    assert!(config.tls.crls.is_empty());
    assert_eq!(config.idle_timeout, Duration::from_secs(300));
    assert_eq!(config.expiry_warning_days, 30);
    assert_eq!(config.max_connections_per_agency, 32);
    assert_eq!(config.max_concurrent_streams_per_connection, 200);

    let set = GOOD.replace(
        "key = \"/etc/liandong/gateway.key\"\n",
        "key = \"/etc/liandong/gateway.key\"\ncrls = [\"pki/ca.crl\", \"/etc/ld/b.crl\"]\n\
         idle_timeout_seconds = 60\nexpiry_warning_days = 10\n",
    ) + "\n[limits]\nmax_connections_per_agency = 4\nmax_concurrent_streams_per_connection = 50\n";
    let config = GatewayConfig::parse(&set, Path::new("/srv/ld/gateway.toml"), no_env).unwrap();
    assert_eq!(
        config.tls.crls,
        [Path::new("/srv/ld/pki/ca.crl"), Path::new("/etc/ld/b.crl")]
    );
    assert_eq!(config.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.expiry_warning_days, 10);
    assert_eq!(config.max_connections_per_agency, 4);
    assert_eq!(config.max_concurrent_streams_per_connection, 50);

    for (key, value) in [("idle_timeout_seconds", "0"), ("expiry_warning_days", "0")] {
        let bad = GOOD.replace(
            "key = \"/etc/liandong/gateway.key\"\n",
            &format!("key = \"/etc/liandong/gateway.key\"\n{key} = {value}\n"),
        );
        let err = GatewayConfig::parse(&bad, Path::new("g.toml"), no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("tls.{key}")), "{err}");
    }
    let bad = format!("{GOOD}\n[limits]\nmax_connections_per_agency = 0\n");
    let err = GatewayConfig::parse(&bad, Path::new("g.toml"), no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.max_connections_per_agency"), "{err}");
}
