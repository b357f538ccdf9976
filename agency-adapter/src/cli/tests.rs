use clap::error::ErrorKind;
use liandong_core::toml_file::FileError;

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("liandong-adapter").chain(args.iter().copied()))
}

fn tail(args: &[&str]) -> TailArgs {
    let mut all = vec!["tail"];
    all.extend_from_slice(args);
    match parse(&all).unwrap().command {
        Command::Tail(tail) => tail,
        other => panic!("{other:?}"),
    }
}

fn refused(args: &[&str]) -> String {
    let err = parse(args).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueValidation, "{err}");
    assert!(err.use_stderr());
    err.to_string()
}

#[test]
fn the_clap_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn gateway_flags_are_accepted_before_and_after_the_subcommand() {
    let before = parse(&[
        "--gateway",
        "https://gw:1",
        "--ca",
        "ca.crt",
        "send",
        "n.json",
    ])
    .unwrap();
    let after = parse(&[
        "send",
        "n.json",
        "--gateway",
        "https://gw:1",
        "--ca",
        "ca.crt",
    ])
    .unwrap();
    for cli in [before, after] {
        assert_eq!(cli.gateway.url.as_deref(), Some("https://gw:1"));
        assert_eq!(cli.gateway.ca.as_deref(), Some(Path::new("ca.crt")));
        let Command::Send(send) = cli.command else {
            panic!()
        };
        assert_eq!(send.input(), Some(Path::new("n.json")));
    }
    let cli = parse(&["tail", "--subscription", "s", "--server-name", "localhost"]).unwrap();
    assert_eq!(cli.gateway.server_name.as_deref(), Some("localhost"));
}

#[test]
fn send_reads_stdin_without_a_file_or_with_a_dash() {
    for args in [&["send"][..], &["send", "-"]] {
        let Command::Send(send) = parse(args).unwrap().command else {
            panic!()
        };
        assert_eq!(send.input(), None);
    }
}

#[test]
fn tail_needs_a_subscription_and_a_subcommand_is_required() {
    let err = parse(&["tail"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
    assert!(err.to_string().contains("--subscription"), "{err}");
    assert!(parse(&[]).unwrap_err().use_stderr());
    assert!(!parse(&["--help"]).unwrap_err().use_stderr());
}

#[test]
fn tail_defaults_open_from_the_beginning_with_the_gateways_limits() {
    let open = tail(&["--subscription", "psb-main"]).subscription_open();
    assert_eq!(
        open,
        pb::SubscriptionOpen {
            name: "psb-main".into(),
            filter: Some(pb::SubscriptionFilter::default()),
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Beginning(true)),
            }),
            max_in_flight: 0,
            ack_timeout_seconds: 0,
        }
    );
}

#[test]
fn tail_flags_build_the_open() {
    let args = tail(&[
        "--subscription",
        "psb.transfers_1",
        "--event",
        "EVENT_TYPE_CASE_TRANSFERRED",
        "--event",
        "CLUE_SHARED",
        "--event",
        "CASE_TRANSFERRED",
        "--case-ref-prefix",
        "CZ-2026-",
        "--sender",
        "cz-eeb",
        "--sender",
        "ay-eeb",
        "--region",
        "140423",
        "--from",
        "after:42",
        "--max-in-flight",
        "8",
        "--ack-timeout",
        "120",
        "--limit",
        "3",
        "--idle-exit",
        "1.5",
    ]);
    assert_eq!(args.limit, Some(3));
    assert_eq!(args.idle_exit, Some(Duration::from_millis(1500)));
    let open = args.subscription_open();
    assert_eq!(
        open,
        pb::SubscriptionOpen {
            name: "psb.transfers_1".into(),
            filter: Some(pb::SubscriptionFilter {
                // Sorted by value and deduplicated.
                events: vec![
                    pb::EventType::ClueShared as i32,
                    pb::EventType::CaseTransferred as i32
                ],
                case_ref_prefix: "CZ-2026-".into(),
                senders: vec!["ay-eeb".into(), "cz-eeb".into()],
                regions: vec!["140423".into()],
            }),
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::AfterSequence(42)),
            }),
            max_in_flight: 8,
            ack_timeout_seconds: 120,
        }
    );
}

#[test]
fn the_same_filter_in_another_order_is_the_same_filter() {
    let a = tail(&[
        "--subscription",
        "s",
        "--event",
        "CASE_FILED",
        "--event",
        "CLUE_SHARED",
    ]);
    let b = tail(&[
        "--subscription",
        "s",
        "--event",
        "CLUE_SHARED",
        "--event",
        "CASE_FILED",
    ]);
    assert_eq!(a.filter(), b.filter());
}

#[test]
fn from_accepts_beginning_now_and_after() {
    assert_eq!("beginning".parse::<Start>().unwrap(), Start::Beginning);
    assert_eq!("now".parse::<Start>().unwrap(), Start::Now);
    assert_eq!("after:0".parse::<Start>().unwrap(), Start::After(0));
    assert_eq!(
        Start::Now.to_wire().position,
        Some(pb::start_position::Position::Now(true))
    );
    for bad in [
        "", "later", "after:", "after:x", "after:-1", "after:+1", "after: 1", "Now",
    ] {
        let err = bad.parse::<Start>().unwrap_err();
        assert!(err.to_string().contains("after:N"), "{bad}: {err}");
    }
    let message = refused(&["tail", "--subscription", "s", "--from", "after:x"]);
    assert!(message.contains("--from"), "{message}");
    assert_eq!(Start::After(7).to_string(), "after:7");
}

#[test]
fn unknown_events_are_refused_listing_the_known_ones() {
    let message = refused(&["tail", "--subscription", "s", "--event", "BOGUS"]);
    assert!(message.contains("--event"), "{message}");
    assert!(message.contains("BOGUS"), "{message}");
    assert!(message.contains("CASE_FILED"), "{message}");
    assert!(message.contains("STATISTICS_REPORT"), "{message}");
    refused(&["tail", "--subscription", "s", "--event", "UNSPECIFIED"]);
    refused(&["tail", "--subscription", "s", "--event", "case_filed"]);
}

#[test]
fn every_tail_flag_is_validated() {
    let cases: &[(&[&str], &str)] = &[
        (&["--subscription", "has space"], "--subscription"),
        (&["--subscription", ""], "--subscription"),
        (&["--case-ref-prefix", "CZ 2026"], "--case-ref-prefix"),
        (&["--sender", "CZ-EEB"], "--sender"),
        (&["--sender", "1abc"], "--sender"),
        (&["--region", "14042"], "--region"),
        (&["--region", "14042x"], "--region"),
        (&["--max-in-flight", "0"], "--max-in-flight"),
        (&["--max-in-flight", "1025"], "--max-in-flight"),
        (&["--ack-timeout", "0"], "--ack-timeout"),
        (&["--ack-timeout", "3601"], "--ack-timeout"),
        (&["--limit", "0"], "--limit"),
        (&["--limit=-1"], "--limit"),
        (&["--idle-exit", "0"], "--idle-exit"),
        (&["--idle-exit", "NaN"], "--idle-exit"),
        (&["--idle-exit", "soon"], "--idle-exit"),
        (&["--idle-exit", "1e30"], "--idle-exit"),
    ];
    for (flags, named) in cases {
        let mut args = vec!["tail", "--subscription", "s"];
        args.extend_from_slice(flags);
        let err = parse(&args).unwrap_err();
        assert!(err.use_stderr(), "{flags:?} was accepted");
        let message = err.to_string();
        assert!(message.contains(named), "{flags:?}: {message}");
    }
    let ok = tail(&[
        "--subscription",
        "s",
        "--max-in-flight",
        "1024",
        "--ack-timeout",
        "3600",
    ]);
    assert_eq!((ok.max_in_flight, ok.ack_timeout), (Some(1024), Some(3600)));
}

#[test]
fn settings_come_from_the_config_file_with_flags_overriding() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("adapter.toml");
    std::fs::write(
        &config,
        "[gateway]\nurl = \"https://127.0.0.1:7443\"\nca = \"pki/ca.crt\"\n\
         cert = \"pki/a.crt\"\nkey = \"pki/a.key\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let cli = parse(&["--config", config, "send", "--cert", "other.crt"]).unwrap();
    let settings = cli.gateway.settings().unwrap();
    assert_eq!(settings.url, "https://127.0.0.1:7443");
    assert_eq!(settings.ca, dir.path().join("pki/ca.crt"));
    assert_eq!(settings.cert, PathBuf::from("other.crt"));
    assert_eq!(settings.key, dir.path().join("pki/a.key"));

    let cli = parse(&["send", "--gateway", "https://gw:7443", "--key", "k"]).unwrap();
    let err = cli.gateway.settings().unwrap_err();
    assert!(
        matches!(&err, ConfigError::Incomplete { missing, .. } if missing.len() == 2),
        "{err}"
    );

    let cli = parse(&["send", "--config", "/nonexistent/adapter.toml"]).unwrap();
    assert!(matches!(
        cli.gateway.settings(),
        Err(ConfigError::File(FileError::Read { .. }))
    ));
}

#[test]
fn log_format_is_pretty_unless_json_is_asked_for_anywhere_on_the_line() {
    assert_eq!(parse(&["status"]).unwrap().log_format, LogFormat::default());
    assert_eq!(LogFormat::default(), LogFormat::Pretty);
    assert_eq!(
        parse(&["--log-format", "json", "status"])
            .unwrap()
            .log_format,
        LogFormat::Json
    );
    assert_eq!(
        parse(&["status", "--log-format", "JSON"])
            .unwrap()
            .log_format,
        LogFormat::Json
    );
    let err = parse(&["--log-format", "yaml", "status"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue, "{err}");
}
