use super::*;

fn at(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

const NOW: i64 = 1_800_000_000;

#[test]
fn status_reads_for_people() {
    let status = pb::GatewayStatus {
        version: "1.2.3".into(),
        started_at: Some(at(NOW - 3 * 3600)),
        uptime_seconds: 3 * 3600,
        store_backend: "postgres".into(),
        store_bytes: 12 * 1024 * 1024,
        store_healthy: true,
        high_water: 120,
        notifications: 118,
        connections: 4,
        streams: 2,
        certificates: vec![
            pb::CertificateExpiry {
                what: "server certificate".into(),
                not_after: Some(at(NOW + 90 * 86_400)),
                days_left: 90,
            },
            pb::CertificateExpiry {
                what: "CRL of CN=CA".into(),
                not_after: Some(at(NOW - 86_400)),
                days_left: -1,
            },
        ],
        audit: Some(pb::AuditState {
            rows: 500,
            head_at: Some(at(NOW - 5)),
            checkpoint_row: 480,
            checkpoint_at: Some(at(NOW - 600)),
            rows_since_checkpoint: 20,
        }),
        disabled_agencies: vec!["cz-psb".into()],
        breaches_open: 2,
    };
    let text = status_text(&status, NOW);
    for expected in [
        "liandong-gateway 1.2.3, up 3 h",
        "postgres, 12.0 MiB, writes work",
        "high-water 120, 118 notifications",
        "4 TLS connections, 2 subscription streams",
        "500 rows, last appended 5 s ago",
        "row 480, signed 10 min ago, 20 rows since",
        "2 open",
        "disabled      cz-psb",
        "server certificate",
        "EXPIRED 1 days ago",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
}

#[test]
fn agencies_table_lists_every_agency_aligned() {
    let list = pb::AgencyList {
        agencies: vec![
            pb::AgencyActivity {
                id: "cz-eeb".into(),
                name: "长治市生态环境局".into(),
                role: "ENVIRONMENT".into(),
                connections: 2,
                connected_since: Some(at(NOW - 120)),
                last_publish: Some(at(NOW - 30)),
                ..Default::default()
            },
            pb::AgencyActivity {
                id: "cz-psb".into(),
                name: "长治市公安局".into(),
                role: "POLICE".into(),
                last_refusal: Some(at(NOW - 3600)),
                last_refusal_reason: "PUBLISH_REFUSED PERMISSION_DENIED: no".into(),
                state: Some(pb::AgencyState {
                    agency: "cz-psb".into(),
                    disabled: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
    };
    let text = agencies_text(&list, NOW);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("AGENCY"));
    assert!(lines[1].starts_with("cz-eeb") && lines[1].contains("2 min ago"));
    assert!(lines[1].contains("30 s ago") && lines[1].contains("enabled"));
    assert!(lines[2].starts_with("cz-psb") && lines[2].contains("DISABLED"));
    assert!(lines[2].contains("1 h ago: PUBLISH_REFUSED PERMISSION_DENIED: no"));
}

#[test]
fn subscriptions_table_shows_lag_and_connection() {
    let list = pb::SubscriptionList {
        subscriptions: vec![pb::SubscriptionState {
            owner: "cz-psb".into(),
            name: "all".into(),
            filter: "everything".into(),
            acked_through: 7,
            lag_messages: 12,
            lag_seconds: 200,
            in_flight: 3,
            connected: true,
            updated_at: Some(at(NOW - 60)),
            held_by: "gw-1:4242:0a1b2c3d".into(),
            ..Default::default()
        }],
    };
    let text = subscriptions_text(&list, NOW);
    assert!(text.contains("12 notifications, oldest 3 min"), "{text}");
    assert!(
        text.contains("HELD BY") && text.contains("gw-1:4242:0a1b2c3d"),
        "{text}"
    );
    assert!(
        text.contains("yes") && text.contains("everything"),
        "{text}"
    );
    assert_eq!(
        subscriptions_text(&pb::SubscriptionList::default(), NOW),
        "no subscription matches\n"
    );
}

#[test]
fn an_audit_result_reads_for_people() {
    let clean = pb::AuditVerifyProgress {
        rows_checked: 40,
        rows_total: 40,
        done: true,
        clean: true,
        problems: Vec::new(),
        checkpoints_verified: 1,
    };
    assert_eq!(
        audit_text(&clean),
        "audit log: 40 rows checked, no problem found; 1 signed checkpoint(s) match\n"
    );
    let broken = pb::AuditVerifyProgress {
        clean: false,
        problems: vec!["changed at row 4: hash does not match".into()],
        ..clean
    };
    let text = audit_text(&broken);
    assert!(text.contains("1 problem(s)"), "{text}");
    assert!(text.contains("  changed at row 4"), "{text}");
}
