use super::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/dev");

fn parse(text: &str) -> Result<DaemonConfig, ConfigError> {
    DaemonConfig::parse(
        Path::new("etc/adapter.toml"),
        text,
        PartialGateway::default(),
    )
}

const MINIMAL: &str = r#"
agency = "cz-psb"
signing_key = "keys/cz-psb.signing.pk8"
[gateway]
url = "https://127.0.0.1:7443"
ca = "ca.crt"
cert = "a.crt"
key = "a.key"
"#;

fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

fn refused(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn every_example_config_in_deploy_dev_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(DIR).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("adapter-") && name.ends_with(".toml")) {
            continue;
        }
        let config = DaemonConfig::load(&path, PartialGateway::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(name.contains(config.agency.as_str()), "{name}");
        assert!(
            config
                .signing_key
                .ends_with(format!("{}.signing.pk8", config.agency))
        );
        // The same file serves send and tail.
        crate::config::AdapterConfig::load(&path).unwrap();
        seen += 1;
    }
    assert!(seen >= 3, "one example per agency type");
}

#[test]
fn the_police_example_says_what_it_does() {
    let path = Path::new(DIR).join("adapter-cz-psb.toml");
    let config = DaemonConfig::load(&path, PartialGateway::default()).unwrap();
    assert_eq!(
        config.http_listen(),
        Some("127.0.0.1:7601".parse().unwrap())
    );
    assert_eq!(
        config.outbox.path,
        Path::new(DIR).join("data/adapters/cz-psb/state.db")
    );
    let subscription = &config.subscriptions[0];
    assert_eq!(subscription.name.as_str(), "psb-main");
    assert!(matches!(subscription.sink, SinkSettings::Webhook(_)));
    // Sorted by event number, deduplicated.
    assert!(
        subscription
            .filter
            .to_wire()
            .events
            .windows(2)
            .all(|w| w[0] < w[1])
    );
    assert!(matches!(
        config.dead_letter_sink,
        Some(SinkSettings::Webhook(_))
    ));
}

#[test]
fn defaults_fill_what_is_left_out() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.agency.as_str(), "cz-psb");
    assert_eq!(config.signing_key, Path::new("etc/keys/cz-psb.signing.pk8"));
    assert_eq!(
        config.outbox,
        OutboxSettings {
            path: PathBuf::from("etc/cz-psb.adapter.db"),
            max_pending: DEFAULT_MAX_PENDING,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_notification_bytes: DEFAULT_MAX_NOTIFICATION_BYTES,
            keep_sent: Duration::from_secs(30 * 86_400),
            retry: RetrySettings {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(60),
            },
        }
    );
    assert!(config.sources.is_empty() && config.subscriptions.is_empty());
    assert_eq!(config.dead_letter_sink, None);
    assert_eq!(
        config.status,
        StatusSettings {
            max_pending_age: Duration::from_secs(300),
            max_dead_letters: 0,
            max_failure: Duration::from_secs(300),
            require_daemon: true,
        }
    );
}

#[test]
fn subscriptions_become_the_open_the_gateway_expects() {
    let config = parse(&with(
        r#"
[[subscription]]
name = "inbox"
start = "after:42"
max_in_flight = 8
ack_timeout_seconds = 120
filter = { events = ["CASE_FILED", "EVENT_TYPE_CLUE_SHARED", "CASE_FILED"], case_ref_prefix = "CZ-", senders = ["cz-eeb", "cz-eeb"], regions = ["140423"] }
sink = { kind = "stdout" }
"#,
    ))
    .unwrap();
    assert_eq!(
        config.subscriptions[0].open(),
        pb::SubscriptionOpen {
            name: "inbox".into(),
            filter: Some(pb::SubscriptionFilter {
                events: vec![
                    pb::EventType::ClueShared as i32,
                    pb::EventType::CaseFiled as i32
                ],
                case_ref_prefix: "CZ-".into(),
                senders: vec!["cz-eeb".into()],
                regions: vec!["140423".into()],
            }),
            start: Some(Start::After(42).to_wire()),
            max_in_flight: 8,
            ack_timeout_seconds: 120,
        }
    );
}

#[test]
fn the_http_source_binds_loopback_unless_allowed_otherwise() {
    let message = refused(&with(
        "[[source]]\nkind = \"http\"\nlisten = \"0.0.0.0:7601\"\ntoken_file = \"t\"\n",
    ));
    assert!(
        message.starts_with(
            "etc/adapter.toml: `source[0].listen`: 0.0.0.0:7601 is not a loopback address"
        ),
        "{message}"
    );
    assert!(message.contains("allow_non_loopback = true"), "{message}");
    let config = parse(&with(
        "[[source]]\nkind = \"http\"\nlisten = \"0.0.0.0:7601\"\nallow_non_loopback = true\ntoken_file = \"t\"\npublic_address = \"Adapter.example:7601\"\n",
    ))
    .unwrap();
    assert_eq!(config.http_listen(), Some("0.0.0.0:7601".parse().unwrap()));
    let source = config.http_source().unwrap();
    assert_eq!(source.token_file, Path::new("etc/t"));
    assert_eq!(
        source.public_address.as_deref(),
        Some("adapter.example:7601")
    );
    let config = parse(&with(
        "[[source]]\nkind = \"http\"\nlisten = \"[::1]:7601\"\ntoken_file = \"t\"\n",
    ))
    .unwrap();
    assert!(config.http_listen().unwrap().ip().is_loopback());
}

#[test]
fn errors_name_the_file_and_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            "[[source]]\nkind = \"ftp\"\n",
            "etc/adapter.toml:10:8: in [source]: unknown variant `ftp`, expected `folder` or `http`",
        ),
        (
            "[[source]]\nkind = \"folder\"\npath = \"in\"\ncolour = 1\n",
            "unknown field `colour`",
        ),
        (
            "[[source]]\nkind = \"folder\"\n",
            "etc/adapter.toml: missing field `source[0].path`",
        ),
        (
            "[[source]]\nkind = \"http\"\nlisten = \"127.0.0.1:1\"\n",
            "etc/adapter.toml: missing field `source[0].token_file`",
        ),
        (
            "[[source]]\nkind = \"http\"\nlisten = \"127.0.0.1:1\"\ntoken_file = \"t\"\npublic_address = \"a.example:1\"\n",
            "`source[0].public_address`: is only for an endpoint with allow_non_loopback = true",
        ),
        (
            "[[source]]\nkind = \"http\"\nlisten = \"0.0.0.0:1\"\nallow_non_loopback = true\ntoken_file = \"t\"\npublic_address = \"a.example\"\n",
            "`source[0].public_address`: \"a.example\" is not host:port",
        ),
        (
            "[[subscription]]\nname = \"a\"\nsink = { kind = \"webhook\", url = \"http://127.0.0.1:9/\", ca = \"ca.pem\" }\n",
            "`subscription[0].sink.ca`: is only for an https:// url",
        ),
        (
            "[[source]]\nkind = \"http\"\nlisten = \"localhost:1\"\n",
            "`source[0].listen`: \"localhost:1\" is not an IP address and port",
        ),
        (
            "[[source]]\nkind = \"folder\"\npath = \"in\"\n[[source]]\nkind = \"folder\"\npath = \"in\"\n",
            "`source[1].path`: is watched by an earlier source",
        ),
        (
            "[outbox]\nmax_pending = 0\n",
            "`outbox.max_pending`: 0 is out of range (1 to 100000000)",
        ),
        (
            "[outbox]\nmax_in_flight = 2000\n",
            "`outbox.max_in_flight`: 2000 is out of range",
        ),
        (
            "[outbox]\nretry_initial_ms = 5000\nretry_max_ms = 10\n",
            "`outbox.retry_max_ms`: 10 is less than retry_initial_ms (5000)",
        ),
        (
            "[[subscription]]\nname = \"a b\"\nsink = { kind = \"stdout\" }\n",
            "`subscription[0].name`: may only contain",
        ),
        (
            "[[subscription]]\nname = \"a\"\n",
            "missing field `subscription[0].sink`",
        ),
        (
            "[[subscription]]\nname = \"a\"\nfilter = { events = [\"BOGUS\"] }\nsink = { kind = \"stdout\" }\n",
            "`subscription[0].filter.events[0]`: unknown event type \"BOGUS\"",
        ),
        (
            "[[subscription]]\nname = \"a\"\nstart = \"later\"\nsink = { kind = \"stdout\" }\n",
            "`subscription[0].start`: expected beginning, now or after:N",
        ),
        (
            "[[subscription]]\nname = \"a\"\nsink = { kind = \"stdout\" }\n[[subscription]]\nname = \"a\"\nsink = { kind = \"stdout\" }\n",
            "`subscription[1].name`: a is used by an earlier subscription",
        ),
        (
            "[[subscription]]\nname = \"a\"\nsink = { kind = \"webhook\", url = \"ftp://x/y\" }\n",
            "`subscription[0].sink.url`: \"ftp://x/y\" must be an http:// or https:// URL",
        ),
        (
            "[[subscription]]\nname = \"a\"\nsink = { kind = \"webhook\", url = \"http://127.0.0.1/\", headers = { Authorization = \"a\\nb\" } }\n",
            "`subscription[0].sink.headers.Authorization`: is not a valid header value",
        ),
        ("[dead_letter]\n", "missing field `dead_letter.sink`"),
        (
            "[status]\nmax_pending_age_seconds = 0\n",
            "`status.max_pending_age_seconds`: 0 is out of range",
        ),
    ];
    for (extra, expected) in cases {
        let message = refused(&with(extra));
        assert!(
            message.contains(expected),
            "{extra:?}\n  gave {message}\n  expected {expected}"
        );
        assert!(message.starts_with("etc/adapter.toml"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }
    assert_eq!(
        refused(&MINIMAL.replace("agency = \"cz-psb\"\n", "")),
        "etc/adapter.toml: missing field `agency`"
    );
    assert!(
        refused(&MINIMAL.replace("\"cz-psb\"", "\"CZ-PSB\""))
            .contains("`agency`: may only contain")
    );
    assert_eq!(
        refused(&MINIMAL.replace("signing_key = \"keys/cz-psb.signing.pk8\"\n", "")),
        "etc/adapter.toml: missing field `signing_key`"
    );
    assert!(refused(&MINIMAL.replace("key = \"a.key\"\n", "")).contains("gateway.key"));
}

#[test]
fn a_gateway_only_file_is_not_a_daemon_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.toml");
    std::fs::write(&path, "[gateway]\nurl = \"https://gw:1\"\n").unwrap();
    assert!(!is_daemon_config(&path).unwrap());
    std::fs::write(&path, MINIMAL).unwrap();
    assert!(is_daemon_config(&path).unwrap());
}

#[test]
fn webhook_plain_http_to_remote_host_is_refused() {
    for url in [
        "http://case-system.eeb.example/hook",
        "http://10.0.0.7:8080/hook",
        "http://127.0.0.1.evil.example/hook",
        "http://[fe80::1]/hook",
    ] {
        let message = refused(&with(&format!(
            "[[subscription]]\nname = \"a\"\nsink = {{ kind = \"webhook\", url = \"{url}\" }}\n"
        )));
        assert!(
            message.contains("`subscription[0].sink.url`")
                && message.contains("plain http:// is only allowed to a loopback host"),
            "{url}: {message}"
        );
        let message = refused(&with(&format!(
            "[dead_letter]\nsink = {{ kind = \"webhook\", url = \"{url}\" }}\n"
        )));
        assert!(message.contains("`dead_letter.sink.url`"), "{message}");
    }
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://127.0.0.2/hook",
        "http://localhost/hook",
        "http://[::1]:9/hook",
        "https://case-system.eeb.example/hook",
    ] {
        parse(&with(&format!(
            "[[subscription]]\nname = \"a\"\nsink = {{ kind = \"webhook\", url = \"{url}\" }}\n"
        )))
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn verify_defaults_to_reject_and_names_bad_values() {
    assert_eq!(parse(MINIMAL).unwrap().verify, None);
    let config = parse(&with("[verify]\nregistry = \"agencies.toml\"\n")).unwrap();
    assert_eq!(
        config.verify,
        Some(VerifySettings {
            registry: PathBuf::from("etc/agencies.toml"),
            on_failure: OnFailure::Reject,
        })
    );
    let warn = parse(&with(
        "[verify]\nregistry = \"agencies.toml\"\non_failure = \"warn\"\n",
    ))
    .unwrap();
    assert_eq!(warn.verify.unwrap().on_failure, OnFailure::Warn);
    assert_eq!(
        refused(&with(
            "[verify]\nregistry = \"agencies.toml\"\non_failure = \"drop\"\n"
        )),
        "etc/adapter.toml: `verify.on_failure`: \"drop\" is not \"reject\" or \"warn\""
    );
    assert!(refused(&with("[verify]\non_failure = \"warn\"\n")).contains("verify.registry"));
}

#[test]
fn a_subscriptions_rejected_folder_defaults_beside_the_config() {
    let text = with(
        "[[subscription]]\nname = \"psb-inbox\"\n[subscription.sink]\nkind = \"stdout\"\n\
         [[subscription]]\nname = \"psb-two\"\nrejected = \"/var/lib/ld/rejected-two\"\n\
         [subscription.sink]\nkind = \"stdout\"\n",
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.subscriptions[0].rejected,
        Path::new("etc/rejected/psb-inbox")
    );
    assert_eq!(
        config.subscriptions[1].rejected,
        Path::new("/var/lib/ld/rejected-two")
    );
}

#[test]
fn the_production_example_verifies_deliveries() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/production/adapter.toml"
    ));
    let config = DaemonConfig::load(path, PartialGateway::default()).unwrap();
    assert_eq!(
        config.verify,
        Some(VerifySettings {
            registry: PathBuf::from("/etc/liandong-adapter/agencies.toml"),
            on_failure: OnFailure::Reject,
        })
    );
    assert_eq!(
        config.subscriptions[0].rejected,
        Path::new("/var/lib/liandong-adapter/rejected/psb-main")
    );
}
