use std::time::Duration;

use crate::store::{DaemonLease, DeadLetter, SubscriptionState};

use super::*;

const NOW: i64 = 1_795_163_400_000_000;
const SECOND: i64 = 1_000_000;

fn limits() -> Limits {
    Limits {
        status: StatusSettings {
            max_pending_age: Duration::from_secs(300),
            max_dead_letters: 0,
            max_failure: Duration::from_secs(60),
            require_daemon: true,
        },
        max_pending: 100,
        certificate: Certificate::Unchecked,
    }
}

fn healthy() -> Snapshot {
    Snapshot {
        outbox_depth: 2,
        oldest_pending_accepted_at: Some(NOW - 10 * SECOND),
        sent: 40,
        dead_letters: vec![],
        dead_letter_count: 0,
        last_success_at: Some(NOW - SECOND),
        last_error: None,
        last_error_at: None,
        subscriptions: vec![SubscriptionState {
            name: "psb-main".into(),
            last_acked_sequence: Some(42),
            last_acked_at: Some(NOW - 2 * SECOND),
            failing_since: None,
            last_error: None,
            last_error_at: None,
            verified: 0,
            unverifiable: 0,
            failed_passed: 0,
            rejected: 0,
        }],
        daemon: Some(DaemonLease {
            pid: 4242,
            started_at: NOW - 100 * SECOND,
            heartbeat_at: NOW - 3 * SECOND,
            stopped_at: None,
        }),
    }
}

#[test]
fn a_running_daemon_keeping_up_is_healthy() {
    let health = evaluate(&healthy(), &limits(), NOW);
    assert_eq!(
        health,
        Health {
            healthy: true,
            problems: vec![],
            warnings: vec![],
        }
    );
    let text = report_text(&healthy(), &limits(), NOW);
    assert!(text.starts_with("healthy:       yes\n"), "{text}");
    assert!(text.contains("daemon:        running (pid 4242"), "{text}");
    assert!(text.contains("outbox:        2 pending of at most 100, oldest accepted 2026-11-20T08:29:50Z (10s ago)"), "{text}");
    assert!(
        text.contains("subscription:  psb-main: last acked sequence 42"),
        "{text}"
    );
    let json = report_json(&healthy(), &limits(), NOW);
    assert_eq!(json["healthy"], true);
    assert_eq!(json["outbox"]["pending"], 2);
    assert_eq!(json["outbox"]["oldest_pending_age_seconds"], 10);
    assert_eq!(json["push"]["last_success_at"], "2026-11-20T08:29:59Z");
    assert_eq!(json["subscriptions"][0]["last_acked_sequence"], 42);
    assert_eq!(json["daemon"]["running"], true);
}

#[test]
fn each_problem_makes_it_unhealthy_and_is_named() {
    let mut snapshot = healthy();
    snapshot.outbox_depth = 100;
    snapshot.oldest_pending_accepted_at = Some(NOW - 301 * SECOND);
    snapshot.dead_letter_count = 1;
    snapshot.dead_letters = vec![DeadLetter {
        local_id: 3,
        notification_id: "psb-3".into(),
        source: "folder".into(),
        code: "INVALID_ARGUMENT".into(),
        reason: "notification.region: must be a six-digit GB/T 2260 code".into(),
        accepted_at: NOW - 5 * SECOND,
        dead_at: NOW - 4 * SECOND,
        reported_at: None,
    }];
    snapshot.last_error = Some("gateway unreachable: UNAVAILABLE".into());
    snapshot.last_error_at = Some(NOW - SECOND);
    snapshot.subscriptions[0].failing_since = Some(NOW - 61 * SECOND);
    snapshot.subscriptions[0].last_error = Some("webhook answered 500".into());
    snapshot.daemon.as_mut().unwrap().heartbeat_at = NOW - 60 * SECOND;
    let health = evaluate(&snapshot, &limits(), NOW);
    assert!(!health.healthy);
    assert_eq!(
        health.problems,
        [
            "outbox full: 100 pending (outbox.max_pending = 100); sources are refused",
            "the oldest pending notification has waited 301s (status.max_pending_age_seconds = 300)",
            "1 dead letters (status.max_dead_letters = 0)",
            "subscription psb-main has been failing for 61s: webhook answered 500",
            "the daemon is not running",
        ]
    );
    let text = report_text(&snapshot, &limits(), NOW);
    assert!(text.starts_with("healthy:       NO\n"), "{text}");
    assert!(
        text.contains("  - psb-3 (local id 3, from folder): INVALID_ARGUMENT: notification.region"),
        "{text}"
    );
    assert!(
        text.contains("last error:    gateway unreachable: UNAVAILABLE"),
        "{text}"
    );
    let json = report_json(&snapshot, &limits(), NOW);
    assert_eq!(json["dead_letters"]["count"], 1);
    assert_eq!(
        json["dead_letters"]["recent"][0]["code"],
        "INVALID_ARGUMENT"
    );
    assert_eq!(json["problems"].as_array().unwrap().len(), 5);

    // A stopped daemon is fine when the config says so.
    let mut relaxed = limits();
    relaxed.status.require_daemon = false;
    let mut stopped = healthy();
    stopped.daemon.as_mut().unwrap().stopped_at = Some(NOW - SECOND);
    assert!(evaluate(&stopped, &relaxed, NOW).healthy);
    assert!(!evaluate(&stopped, &limits(), NOW).healthy);
}

#[test]
fn status_warns_of_certificate_expiry() {
    const DAY: i64 = 86_400 * SECOND;
    let with = |certificate| Limits {
        certificate,
        ..limits()
    };
    let far = evaluate(
        &healthy(),
        &with(Certificate::NotAfter(NOW + 200 * DAY)),
        NOW,
    );
    assert!(far.healthy && far.warnings.is_empty(), "{far:?}");
    let report = report_json(
        &healthy(),
        &with(Certificate::NotAfter(NOW + 200 * DAY)),
        NOW,
    );
    assert_eq!(report["certificate"]["days_left"], 200);
    assert_eq!(report["certificate"]["not_after"], "2027-06-08T08:30:00Z");

    let soon = with(Certificate::NotAfter(NOW + 29 * DAY + SECOND));
    let health = evaluate(&healthy(), &soon, NOW);
    assert!(health.healthy, "a warning is not yet unhealthy");
    assert_eq!(
        health.warnings,
        ["the client certificate expires in 29 days (at 2026-12-19T08:30:01Z); renew it"]
    );
    let report = report_json(&healthy(), &soon, NOW);
    assert_eq!(report["warnings"][0], health.warnings[0].as_str());
    assert!(
        report_text(&healthy(), &soon, NOW)
            .contains("warning: the client certificate expires in 29 days")
    );
    assert!(report_text(&healthy(), &soon, NOW).contains("(29 days left)"));

    let expired = with(Certificate::NotAfter(NOW - SECOND));
    let health = evaluate(&healthy(), &expired, NOW);
    assert!(!health.healthy);
    assert!(
        health.problems[0].starts_with("the client certificate expired at 2026-11-20T08:29:59Z"),
        "{health:?}"
    );
    assert_eq!(
        report_json(&healthy(), &expired, NOW)["certificate"]["days_left"],
        -1
    );

    let unreadable = evaluate(&healthy(), &with(Certificate::Unreadable), NOW);
    assert!(!unreadable.healthy);
}
