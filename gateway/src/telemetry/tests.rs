use std::ffi::OsStr;
use std::sync::{Arc, Mutex};

use clap::ValueEnum as _;
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

/// A writer whose lines the test reads back.
#[derive(Clone, Default)]
pub(super) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub(super) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` under a subscriber writing `format` (colour when `ansi`) into
/// a buffer; returns what was written.
pub(super) fn logged(format: LogFormat, ansi: bool, f: impl FnOnce()) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        tracing_subscriber::registry().with(log_layer(format, ansi, move || writer.clone()));
    tracing::subscriber::with_default(subscriber, f);
    captured.text()
}

#[test]
fn colour_only_on_a_terminal_without_no_color() {
    assert!(use_ansi(true, None));
    // NO_COLOR set to anything but the empty string turns colour off.
    assert!(!use_ansi(true, Some(OsStr::new("1"))));
    assert!(use_ansi(true, Some(OsStr::new(""))));
    // A file or a pipe never gets escape codes.
    assert!(!use_ansi(false, None));
    assert!(!use_ansi(false, Some(OsStr::new("1"))));
}

#[test]
fn log_format_is_pretty_unless_json_is_asked_for() {
    assert_eq!(LogFormat::default(), LogFormat::Pretty);
    assert_eq!(LogFormat::from_str("json", true), Ok(LogFormat::Json));
    assert_eq!(LogFormat::from_str("JSON", true), Ok(LogFormat::Json));
    assert_eq!(LogFormat::from_str("pretty", true), Ok(LogFormat::Pretty));
    assert!(LogFormat::from_str("yaml", true).is_err());
}

#[test]
fn pretty_lines_carry_escape_codes_only_when_allowed() {
    let event = || {
        let span = tracing::info_span!("request", agency = "cz-eeb");
        let _entered = span.enter();
        tracing::warn!(count = 3, "something happened");
    };
    let plain = logged(LogFormat::Pretty, false, event);
    assert!(plain.contains("something happened"), "{plain}");
    assert!(
        plain.contains("agency") && plain.contains("cz-eeb"),
        "{plain}"
    );
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    // The switch is what decides: on, the same line is coloured.
    let coloured = logged(LogFormat::Pretty, true, event);
    assert!(coloured.contains('\u{1b}'), "{coloured:?}");
}

#[test]
fn json_lines_carry_timestamp_level_target_fields_and_spans() {
    let text = logged(LogFormat::Json, true, || {
        let span = tracing::info_span!(
            "request",
            agency = "cz-eeb",
            grpc.status = tracing::field::Empty
        );
        let _entered = span.enter();
        span.record("grpc.status", 0);
        tracing::info!(case.count = 2, "answered");
    });
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let [line] = lines.as_slice() else {
        panic!("one line expected: {text}")
    };
    assert!(line["timestamp"].is_string(), "{line}");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["target"], module_path!());
    assert_eq!(line["fields"]["message"], "answered");
    assert_eq!(line["fields"]["case.count"], 2);
    assert_eq!(line["span"]["name"], "request");
    assert_eq!(line["span"]["agency"], "cz-eeb");
    // A field recorded after the span opened is there too.
    assert_eq!(line["span"]["grpc.status"], 0);
    assert_eq!(line["spans"][0]["agency"], "cz-eeb");
}

#[test]
fn the_traces_path_is_added_once() {
    assert_eq!(
        traces_url("http://127.0.0.1:4318"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        traces_url("http://collector:4318/"),
        "http://collector:4318/v1/traces"
    );
    assert_eq!(
        traces_url("https://collector/otlp/v1/traces"),
        "https://collector/otlp/v1/traces"
    );
}

/// A minimal configuration, with `tracing` appended.
fn config_with(tracing: &str) -> Result<crate::config::GatewayConfig, String> {
    let text = format!(
        "listen = \"127.0.0.1:7443\"\nregistry = \"agencies.toml\"\n\
         [tls]\nca = \"ca.crt\"\ncert = \"gateway.crt\"\nkey = \"gateway.key\"\n\
         [database]\nurl = \"sqlite://data/liandong.db\"\n\
         [signing]\nkey = \"gateway.signing.pk8\"\n{tracing}"
    );
    crate::config::GatewayConfig::parse(&text, std::path::Path::new("g.toml"), |_| None)
        .map_err(|error| error.to_string())
}

#[test]
fn span_export_is_off_unless_an_endpoint_is_configured() {
    assert_eq!(config_with("").unwrap().tracing, None);
    assert_eq!(
        config_with("[tracing]\nsample_ratio = 0.5\n")
            .unwrap()
            .tracing,
        None
    );
    let on = config_with("[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n")
        .unwrap()
        .tracing
        .unwrap();
    assert_eq!(
        on,
        TracingSettings {
            otlp_endpoint: "http://127.0.0.1:4318".into(),
            service_name: "liandong-gateway".into(),
            sample_ratio: 1.0,
        }
    );
    let named = config_with(
        "[tracing]\notlp_endpoint = \"https://otel.example:4318\"\n\
         service_name = \"liandong-gateway-2\"\nsample_ratio = 0.25\n",
    )
    .unwrap()
    .tracing
    .unwrap();
    assert_eq!(named.service_name, "liandong-gateway-2");
    assert_eq!(named.sample_ratio, 0.25);
}

#[test]
fn unusable_tracing_settings_are_named() {
    for (section, field) in [
        (
            "otlp_endpoint = \"127.0.0.1:4318\"",
            "tracing.otlp_endpoint",
        ),
        (
            "otlp_endpoint = \"grpc://collector:4317\"",
            "tracing.otlp_endpoint",
        ),
        ("otlp_endpoint = \"http://\"", "tracing.otlp_endpoint"),
        ("sample_ratio = 1.5", "tracing.sample_ratio"),
        ("sample_ratio = -0.1", "tracing.sample_ratio"),
        ("sample_ratio = nan", "tracing.sample_ratio"),
        ("service_name = \"\"", "tracing.service_name"),
        ("endpoint = \"http://x\"", "unknown field `endpoint`"),
    ] {
        let error = config_with(&format!("[tracing]\n{section}\n")).unwrap_err();
        assert!(
            error.starts_with("g.toml") && error.contains(field),
            "{section}: {error}"
        );
    }
}

#[test]
fn a_filter_can_select_one_agencys_requests() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry()
        .with(EnvFilter::new("warn,[request{agency=cz-psb}]=debug"))
        .with(log_layer(LogFormat::Json, false, move || writer.clone()));
    tracing::subscriber::with_default(subscriber, || {
        for agency in ["cz-psb", "cz-eeb"] {
            // As the request span records its agency: after it opens.
            let span = tracing::info_span!("request", agency = tracing::field::Empty);
            span.record("agency", tracing::field::display(agency));
            let _entered = span.enter();
            tracing::debug!("detail");
        }
    });
    let text = captured.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let [line] = lines.as_slice() else {
        panic!("one line expected: {text}")
    };
    assert_eq!(line["span"]["agency"], "cz-psb");
}
