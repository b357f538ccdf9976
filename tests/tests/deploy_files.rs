//! The monitoring files under `deploy/` work with what the gateway
//! exports: the alert rules and the scrape example pass `promtool`, the
//! alerts fire as their unit tests (`liandong-alerts.test.yml`) expect, the
//! Grafana dashboard is valid JSON, every metric name the dashboard's
//! queries and the alert expressions use is one a live gateway exports
//! after real traffic, and every alert's `runbook` points to an entry that
//! docs/OPERATIONS.md has.
//!
//! `promtool` comes from Debian's `prometheus` package. Without it the
//! promtool checks fail when `LIANDONG_REQUIRE_OPS_TOOLS=1` (as in CI) and
//! are otherwise skipped with a loud message; the other checks run anyway.

mod ops_http;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use liandong_tests::Testbed;

use ops_http::{make_traffic, names, scrape, value};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(workspace().join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

/// Runs `promtool args`; `None` when promtool is not installed and not
/// required (a loud skip), a failure when it is required.
fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(workspace())
        .output()
    {
        Ok(output) => Some(output),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let required = std::env::var("LIANDONG_REQUIRE_OPS_TOOLS").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "LIANDONG_REQUIRE_OPS_TOOLS=1 but promtool is not installed (Debian: apt-get install prometheus)"
            );
            // Written to the handle itself: the harness captures
            // `eprintln!`, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: promtool {} — promtool is not installed (Debian package `prometheus`; \
                 LIANDONG_REQUIRE_OPS_TOOLS=1 makes this a failure)",
                args.join(" ")
            );
            None
        }
        Err(error) => panic!("run promtool: {error}"),
    }
}

fn assert_promtool_passes(args: &[&str]) {
    if let Some(output) = promtool(args) {
        assert!(
            output.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn alert_rules_pass_promtool() {
    assert_promtool_passes(&["check", "rules", "deploy/prometheus/liandong-alerts.yml"]);
}

#[test]
fn alerts_fire_on_their_series_and_stay_quiet_otherwise() {
    assert_promtool_passes(&[
        "test",
        "rules",
        "deploy/prometheus/liandong-alerts.test.yml",
    ]);
}

#[test]
fn scrape_example_passes_promtool() {
    assert_promtool_passes(&["check", "config", "deploy/prometheus/prometheus.yml"]);
}

/// Every `liandong_…` metric name in `text` (histogram series by their
/// base name).
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("liandong_") {
        let boundary = at == 0
            || !rest[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let end = rest[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(rest.len(), |len| at + len);
        if boundary {
            let name = &rest[at..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            found.insert(base.to_owned());
        }
        rest = &rest[end..];
    }
    found
}

/// Every `expr` of the dashboard's panels and variables' queries.
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", serde_json::Value::String(query)) => {
                        out.push(query.clone());
                    }
                    _ => dashboard_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_queries(item, out);
            }
        }
        _ => {}
    }
}

/// The alert file without its comment lines.
fn alert_rules() -> String {
    read("deploy/prometheus/liandong-alerts.yml")
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_alert_has_a_runbook_entry_in_the_operations_guide() {
    let rules = alert_rules();
    let docs = read("docs/OPERATIONS.md");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    let runbooks: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("runbook: "))
        .map(|link| link.trim_matches('"'))
        .collect();
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    assert_eq!(alerts.len(), runbooks.len(), "one runbook per alert");
    for (alert, link) in alerts.iter().zip(&runbooks) {
        let anchor = link
            .strip_prefix("docs/OPERATIONS.md#")
            .unwrap_or_else(|| panic!("{alert}: runbook {link} is not in docs/OPERATIONS.md"));
        assert_eq!(anchor, format!("runbook-{}", alert.to_lowercase()));
        assert!(
            docs.contains(&format!("<a id=\"{anchor}\"></a>")),
            "docs/OPERATIONS.md has no entry {anchor} for {alert}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_use_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/liandong-dashboard.json"))
            .expect("the dashboard is valid JSON");
    assert!(
        dashboard["panels"].as_array().is_some_and(|p| p.len() > 10),
        "the dashboard has its panels"
    );
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let mut used = BTreeSet::new();
    for query in &queries {
        used.extend(metric_names_in(query));
    }
    let from_dashboard = used.len();
    used.extend(metric_names_in(&alert_rules()));
    assert!(from_dashboard > 10, "{used:?}");

    // A gateway that signs an audit checkpoint every second, after traffic
    // of every kind.
    let bed = Testbed::start_with("\n[audit]\ncheckpoint_seconds = 1\n").expect("test bed");
    make_traffic(&bed).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = scrape(&bed).await;
        if value(&text, "liandong_audit_checkpoint_age_seconds").is_some() {
            break text;
        }
        assert!(Instant::now() < deadline, "no audit checkpoint:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let exported = names(&text);
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used by the dashboard or the alerts but not exported: {missing:?}\nexported: {exported:?}"
    );
}
