//! The `liandong.v1.Operations` read side and the `liandong-gateway admin`
//! command over a real gateway process: only operator certificates are
//! answered (every other caller refused and audited); status, agencies,
//! subscriptions and their lag, breaches and audit verification say what
//! the gateway is doing; the command prints tables and proto3 JSON and
//! exits with its documented codes.

use std::process::{Command, Output};
use std::time::Duration;

use tonic::Code;
use tonic::transport::Channel;

use liandong_core::pb::operations_client::OperationsClient;
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{
    Backend, Subscriber, Testbed, binary, notification, publish, publish_clues,
    publish_county_transfer_received,
};

const WAIT: Duration = Duration::from_secs(20);

/// An Operations client authenticated as `agency`.
async fn operations(bed: &Testbed, agency: &str) -> OperationsClient<Channel> {
    let channel = bed
        .pki
        .credentials(agency)
        .connect(&bed.gateway.url(), None)
        .await
        .expect("connect to the gateway");
    OperationsClient::new(channel)
}

/// The Operations audit refusals recorded for `agency`: (decision, reason).
async fn operations_refusals(bed: &Testbed, agency: &str) -> Vec<(String, String)> {
    let mut conn = bed.connect_database().await;
    sqlx::query_as::<_, (String, String)>(
        "SELECT decision, reason FROM audit_log \
         WHERE action = 'OPERATIONS_REFUSED' AND agency = $1 ORDER BY id",
    )
    .bind(agency)
    .fetch_all(&mut conn)
    .await
    .expect("audit rows")
}

/// Polls `check` every 100 ms until it returns `Some`, for up to `WAIT`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operations_call_of_a_non_operator_is_refused_and_audited() {
    let bed = Testbed::start().expect("test bed");
    let mut client = operations(&bed, "cz-eeb").await;
    let mut codes = vec![
        client.get_status(pb::StatusRequest {}).await.map(drop),
        client
            .list_agencies(pb::ListAgenciesRequest {})
            .await
            .map(drop),
        client
            .list_subscriptions(pb::ListSubscriptionsRequest::default())
            .await
            .map(drop),
        client
            .disable_agency(pb::DisableAgencyRequest {
                agency: "cz-psb".into(),
                reason: "drill".into(),
            })
            .await
            .map(drop),
        client
            .enable_agency(pb::EnableAgencyRequest {
                agency: "cz-psb".into(),
                reason: "drill".into(),
            })
            .await
            .map(drop),
        client
            .seek_subscription(pb::SeekSubscriptionRequest {
                owner: "cz-psb".into(),
                name: "all".into(),
                acked_through: 0,
                reason: "drill".into(),
            })
            .await
            .map(drop),
        client
            .list_breaches(pb::ListBreachesRequest::default())
            .await
            .map(drop),
        client
            .verify_audit(pb::VerifyAuditRequest {})
            .await
            .map(drop),
        client
            .get_report(pb::ReportRequest {
                from: "2026-01-01".into(),
                to: "2026-01-31".into(),
                region: String::new(),
            })
            .await
            .map(drop),
    ];
    for (i, result) in codes.drain(..).enumerate() {
        let status = result.expect_err("a non-operator is refused");
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "call {i}: {status:?}"
        );
        assert!(
            status.message().contains("operator"),
            "call {i} says why: {}",
            status.message()
        );
    }
    let audited = operations_refusals(&bed, "cz-eeb").await;
    assert_eq!(
        audited.len(),
        9,
        "one audit row per refused call: {audited:?}"
    );
    assert!(
        audited
            .iter()
            .all(|(decision, _)| decision == "PERMISSION_DENIED"),
        "{audited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_traffic_store_certificates_and_audit_chain() {
    let bed = Testbed::start().expect("test bed");
    let mut bureau = bed.client("cz-eeb").await;
    let receipts = publish_clues(&mut bureau, "st-", "CZ-ST-1", 0..3).await;
    let mut ops = operations(&bed, "cz-ops").await;
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let status = ops
        .get_status(pb::StatusRequest {})
        .await
        .expect("an operator reads the status")
        .into_inner();
    let after = time::OffsetDateTime::now_utc().unix_timestamp() + 1;

    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert!(status.started_at.is_some());
    assert_eq!(status.high_water, receipts.last().unwrap().sequence);
    assert_eq!(status.notifications, 3);
    assert_eq!(
        status.store_backend,
        match bed.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    assert!(status.store_bytes > 0, "the database occupies some bytes");
    assert!(status.store_healthy);
    assert!(
        status.connections >= 2,
        "the bureau's and the operator's connections are live: {}",
        status.connections
    );
    assert_eq!(status.streams, 0);
    assert_eq!(status.breaches_open, 0);

    let server = status
        .certificates
        .iter()
        .find(|c| c.what.contains("server certificate"))
        .unwrap_or_else(|| {
            panic!(
                "the server certificate is listed: {:?}",
                status.certificates
            )
        });
    assert!(server.not_after.is_some());
    assert!(
        server.days_left > 30,
        "a fresh dev certificate has months left: {}",
        server.days_left
    );
    assert!(
        status.certificates.len() >= 2,
        "the CA is listed beside the server certificate: {:?}",
        status.certificates
    );
    for certificate in &status.certificates {
        // Whole days left, rounded down, as of the call.
        let not_after = certificate.not_after.as_ref().unwrap().seconds;
        let least = (not_after - after).div_euclid(86_400);
        let most = (not_after - before).div_euclid(86_400);
        assert!(
            (least..=most).contains(&certificate.days_left),
            "{}: {} days left, not within {least}..={most}",
            certificate.what,
            certificate.days_left
        );
    }

    let audit = status.audit.expect("the audit state");
    let mut conn = bed.connect_database().await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(audit.rows >= 3, "every publish is audited: {audit:?}");
    assert!(audit.rows <= rows as u64, "{audit:?} of {rows} rows");
    assert!(audit.head_at.is_some());
    assert!(audit.rows_since_checkpoint <= audit.rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn agencies_show_live_connections_streams_last_publish_and_last_refusal() {
    let bed = Testbed::start().expect("test bed");
    let mut ops = operations(&bed, "cz-ops").await;
    let mut bureau = bed.client("cz-eeb").await;
    publish(
        &mut bureau,
        notification("ag-1", "CZ-AG-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .expect("published");
    // A refused publish: RESTRICTED without recipients.
    let refused = publish(
        &mut bureau,
        notification("ag-2", "CZ-AG-2", Event::ClueShared, Level::Restricted, &[]),
    )
    .await
    .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut police = bed.client("cz-psb").await;
    let subscriber = Subscriber::open(&mut police, "ag-all").await.unwrap();

    let find = |list: &pb::AgencyList, id: &str| {
        list.agencies
            .iter()
            .find(|a| a.id == id)
            .unwrap_or_else(|| panic!("{id} is listed"))
            .clone()
    };
    let list = eventually("the police stream is counted", || {
        let mut ops = ops.clone();
        async move {
            let list = ops
                .list_agencies(pb::ListAgenciesRequest {})
                .await
                .unwrap()
                .into_inner();
            (list
                .agencies
                .iter()
                .any(|a| a.id == "cz-psb" && a.streams == 1))
            .then_some(list)
        }
    })
    .await;
    let eeb = find(&list, "cz-eeb");
    assert_eq!(eeb.role, "ENVIRONMENT");
    assert!(!eeb.name.is_empty());
    assert!(eeb.connections >= 1, "{eeb:?}");
    assert!(eeb.connected_since.is_some(), "{eeb:?}");
    assert_eq!(eeb.streams, 0);
    assert!(eeb.last_publish.is_some(), "{eeb:?}");
    assert!(eeb.last_refusal.is_some(), "{eeb:?}");
    assert!(
        eeb.last_refusal_reason.contains("PUBLISH_REFUSED")
            && eeb.last_refusal_reason.contains("INVALID_ARGUMENT"),
        "{}",
        eeb.last_refusal_reason
    );
    let psb = find(&list, "cz-psb");
    assert!(psb.connections >= 1);
    assert_eq!(psb.streams, 1);
    assert!(psb.last_publish.is_none(), "the police published nothing");
    assert!(psb.last_refusal.is_none());
    let idle = find(&list, "cz-procuratorate");
    assert_eq!(idle.connections, 0);
    assert!(idle.connected_since.is_none());
    let operator = find(&list, "cz-ops");
    assert_eq!(operator.role, "OPERATOR");
    assert!(operator.connections >= 1);

    // Gone when the clients are.
    drop(subscriber.close().await);
    drop(police);
    drop(bureau);
    eventually("the bureau's connection is gone", || {
        let mut ops = ops.clone();
        async move {
            let list = ops
                .list_agencies(pb::ListAgenciesRequest {})
                .await
                .unwrap()
                .into_inner();
            list.agencies
                .iter()
                .any(|a| a.id == "cz-eeb" && a.connections == 0 && a.connected_since.is_none())
                .then_some(())
        }
    })
    .await;
    let list = ops
        .list_agencies(pb::ListAgenciesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(find(&list, "cz-psb").streams, 0);
    assert!(
        find(&list, "cz-eeb").last_publish.is_some(),
        "the last publish is read from the store"
    );
}

/// Opens `name` for `agency` from the beginning with `filter`.
fn open_request(name: &str, filter: pb::SubscriptionFilter) -> pb::SubscriptionOpen {
    pb::SubscriptionOpen {
        name: name.to_owned(),
        filter: Some(filter),
        start: Some(pb::StartPosition {
            position: Some(pb::start_position::Position::Beginning(true)),
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_subscription_is_listed_with_its_lag_and_an_up_to_date_one_is_not() {
    let bed = Testbed::start().expect("test bed");
    let mut bureau = bed.client("cz-eeb").await;
    let mut police = bed.client("cz-psb").await;
    publish_clues(&mut bureau, "lag-", "CZ-LAG-1", 0..4).await;

    // Up to date: everything acknowledged.
    let mut current = Subscriber::open(&mut police, "current").await.unwrap();
    current.take_acked(4, WAIT).await;
    current.close().await.unwrap();
    // Behind: opened, nothing acknowledged.
    let behind = Subscriber::open(&mut police, "behind").await.unwrap();
    behind.close().await.unwrap();
    // Wants only transfers: none is stored, so nothing is due.
    let transfers = Subscriber::open_with(
        &mut police,
        open_request(
            "transfers",
            pb::SubscriptionFilter {
                events: vec![Event::CaseTransferred as i32],
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap();
    transfers.close().await.unwrap();

    let mut ops = operations(&bed, "cz-ops").await;
    let all = ops
        .list_subscriptions(pb::ListSubscriptionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    let find = |name: &str| {
        all.iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} is listed: {all:?}"))
    };
    let behind = find("behind");
    assert_eq!(behind.owner, "cz-psb");
    assert_eq!(behind.acked_through, 0);
    assert_eq!(behind.lag_messages, 4, "{behind:?}");
    assert!(!behind.lag_capped);
    assert!(!behind.connected);
    assert_eq!(behind.in_flight, 0);
    assert!(behind.updated_at.is_some());
    assert_eq!(behind.filter, "everything");
    let current = find("current");
    assert_eq!(current.lag_messages, 0, "{current:?}");
    assert_eq!(current.lag_seconds, 0);
    let transfers = find("transfers");
    assert_eq!(transfers.lag_messages, 0, "{transfers:?}");
    assert_eq!(transfers.filter, "events CASE_TRANSFERRED");

    let lagging = ops
        .list_subscriptions(pb::ListSubscriptionsRequest {
            min_lag: 1,
            owner: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    let names: Vec<&str> = lagging.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["behind"]);
    let over = ops
        .list_subscriptions(pb::ListSubscriptionsRequest {
            min_lag: 5,
            owner: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert!(over.is_empty(), "nobody is 5 behind: {over:?}");
    let others = ops
        .list_subscriptions(pb::ListSubscriptionsRequest {
            min_lag: 0,
            owner: "cz-eeb".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert!(
        others.is_empty(),
        "the bureau has no subscription: {others:?}"
    );

    // A connected subscription with a frame it has not acknowledged.
    let mut live = Subscriber::open(&mut police, "live").await.unwrap();
    live.expect_delivery(WAIT, "the first clue").await;
    let state = eventually("the live subscription shows its frame in flight", || {
        let mut ops = ops.clone();
        async move {
            ops.list_subscriptions(pb::ListSubscriptionsRequest {
                min_lag: 0,
                owner: "cz-psb".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .subscriptions
            .into_iter()
            .find(|s| s.name == "live" && s.connected && s.in_flight >= 1)
        }
    })
    .await;
    assert_eq!(state.lag_messages, 4, "nothing acknowledged yet: {state:?}");
}

/// The police filing rule with a drill period of two seconds.
const DRILL_RULES: &str = r#"
[[deadline]]
name = "police-filing-decision"
legal_basis = "drill"
starts_on = ["TRANSFER_RECEIVED"]
stops_on = ["CASE_FILED", "FILING_DECLINED"]
period = { amount = 2, unit = "seconds" }
roll_to_working_day = false
late = "starter"
supervisor = "procuratorate"
alert = true
"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_overdue_filing_decision_is_listed_as_an_open_breach() {
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("drill-deadlines.toml");
    std::fs::write(&rules, DRILL_RULES).unwrap();
    let bed = Testbed::start_with(&format!(
        "\n[mechanism]\ndeadlines = \"{}\"\n",
        rules.display()
    ))
    .unwrap();
    let mut ops = operations(&bed, "cz-ops").await;
    let none = ops
        .list_breaches(pb::ListBreachesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(none.signals.is_empty(), "{none:?}");

    let case = "CZ-2026-HW-0078";
    let mut bureau = bed.client("cz-eeb-xiangyuan").await;
    let mut police = bed.client("cz-psb-xiangyuan").await;
    publish_county_transfer_received(&mut bureau, &mut police, case, "ops-t-78", "ops-r-78").await;

    // The timer is woken once the publish that started the clock has
    // committed; the drill's clock runs out a few seconds later.
    let deadline = std::time::Instant::now() + WAIT;
    let breaches = loop {
        let list = ops
            .list_breaches(pb::ListBreachesRequest::default())
            .await
            .unwrap()
            .into_inner();
        if !list.signals.is_empty() {
            break list.signals;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the breach is never listed:\n{}",
            bed.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    assert_eq!(breaches[0].kind, pb::SignalKind::OpenBreach as i32);
    assert_eq!(breaches[0].case_ref, case);
    assert_eq!(breaches[0].agency, "cz-psb-xiangyuan");
    assert_eq!(breaches[0].rule, "police-filing-decision");

    let within = ops
        .list_breaches(pb::ListBreachesRequest {
            region: "140400".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(within.signals.len(), 1, "the city contains the county");
    let elsewhere = ops
        .list_breaches(pb::ListBreachesRequest {
            region: "140402".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(elsewhere.signals.is_empty(), "{elsewhere:?}");
    let bad = ops
        .list_breaches(pb::ListBreachesRequest {
            region: "14".into(),
        })
        .await
        .expect_err("a bad region is refused");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("region"), "{}", bad.message());

    let status = ops
        .get_status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.breaches_open, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_audit_streams_progress_then_a_clean_result() {
    let bed = Testbed::start().expect("test bed");
    let mut bureau = bed.client("cz-eeb").await;
    publish_clues(&mut bureau, "va-", "CZ-VA-1", 0..5).await;
    let mut ops = operations(&bed, "cz-ops").await;
    let mut stream = ops
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .expect("an operator may verify")
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.expect("the walk streams") {
        messages.push(message);
    }
    let (last, progress) = messages.split_last().expect("at least the result");
    assert!(last.done, "the last message carries the result: {last:?}");
    assert!(last.clean, "{last:?}");
    assert!(last.problems.is_empty());
    assert!(last.rows_checked >= 5, "{last:?}");
    assert!(!progress.is_empty(), "progress before the result");
    assert!(
        progress
            .iter()
            .all(|p| !p.done && p.rows_checked <= p.rows_total)
    );
    assert_eq!(progress[0].rows_checked, 0, "the first says how many rows");
    assert!(progress[0].rows_total >= 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_report_answers_the_operator_and_names_a_bad_field() {
    let bed = Testbed::start().expect("test bed");
    let mut bureau = bed.client("cz-eeb").await;
    publish_clues(&mut bureau, "rp-", "CZ-RP-1", 0..2).await;
    let mut ops = operations(&bed, "cz-ops").await;
    let today = time::OffsetDateTime::now_utc().date();
    let (from, to) = (
        (today - time::Duration::days(2)).to_string(),
        (today + time::Duration::days(2)).to_string(),
    );
    let report = ops
        .get_report(pb::ReportRequest {
            from,
            to,
            region: String::new(),
        })
        .await
        .expect("the operator's report")
        .into_inner();
    let clues: u64 = report
        .events
        .iter()
        .filter(|count| count.agency == "cz-eeb")
        .map(|count| count.count)
        .sum();
    assert_eq!(clues, 2, "{report:?}");
    let bad = ops
        .get_report(pb::ReportRequest {
            from: "2026-02-30".into(),
            to: "2026-03-01".into(),
            region: String::new(),
        })
        .await
        .expect_err("a bad date is refused");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("from"), "{}", bad.message());
    // An operator's bad field is refused on the record, as anyone's is.
    let refusals = operations_refusals(&bed, "cz-ops").await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].0, "INVALID_ARGUMENT");
    assert!(refusals[0].1.contains("from"), "{refusals:?}");
}

/// Runs `liandong-gateway admin` with `agency`'s certificate against
/// `gateway` (a URL).
fn admin(bed: &Testbed, agency: &str, gateway: &str, args: &[&str]) -> Output {
    let pki = &bed.pki.dir;
    let agencies = pki.join("agencies");
    Command::new(binary("liandong-gateway"))
        .arg("admin")
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(agencies.join(format!("{agency}.crt")))
        .arg("--key")
        .arg(agencies.join(format!("{agency}.key")))
        .arg("--gateway")
        .arg(gateway)
        .args(args)
        .env_remove("LIANDONG_ADMIN_GATEWAY")
        .env_remove("LIANDONG_ADMIN_SERVER_NAME")
        .output()
        .expect("run liandong-gateway admin")
}

fn json_of(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {output:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_command_prints_json_and_tables_with_its_exit_codes() {
    let bed = Testbed::start().expect("test bed");
    let mut bureau = bed.client("cz-eeb").await;
    let mut police = bed.client("cz-psb").await;
    let receipts = publish_clues(&mut bureau, "cli-", "CZ-CLI-1", 0..3).await;
    let behind = Subscriber::open(&mut police, "cli-behind").await.unwrap();
    behind.close().await.unwrap();
    let url = bed.gateway.url();

    let status = json_of(&admin(&bed, "cz-ops", &url, &["status", "--json"]));
    assert_eq!(status["high_water"], receipts[2].sequence);
    assert_eq!(status["notifications"], 3);
    assert_eq!(
        status["store_backend"],
        match bed.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    assert!(
        status["certificates"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    let table = admin(&bed, "cz-ops", &url, &["status"]);
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("high-water"), "{text}");
    assert!(text.contains("server certificate"), "{text}");

    let agencies = json_of(&admin(&bed, "cz-ops", &url, &["agencies", "--json"]));
    let eeb = agencies["agencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "cz-eeb")
        .expect("cz-eeb listed")
        .clone();
    assert!(eeb["connections"].as_u64().unwrap() >= 1, "{eeb}");
    assert!(eeb["last_publish"].is_string(), "{eeb}");
    let table = admin(&bed, "cz-ops", &url, &["agencies"]);
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8(table.stdout).unwrap();
    for id in ["cz-eeb", "cz-psb", "cz-procuratorate", "cz-ops"] {
        assert!(text.contains(id), "{id} in the table:\n{text}");
    }

    let lagging = json_of(&admin(
        &bed,
        "cz-ops",
        &url,
        &["subscriptions", "--lagging", "--json"],
    ));
    let listed = lagging["subscriptions"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{lagging}");
    assert_eq!(listed[0]["owner"], "cz-psb");
    assert_eq!(listed[0]["name"], "cli-behind");
    assert_eq!(listed[0]["lag_messages"], 3);
    let none = json_of(&admin(
        &bed,
        "cz-ops",
        &url,
        &["subscriptions", "--lagging", "4", "--json"],
    ));
    assert_eq!(none["subscriptions"].as_array().map(Vec::len), Some(0));
    let table = admin(
        &bed,
        "cz-ops",
        &url,
        &["subscriptions", "--owner", "cz-psb"],
    );
    let text = String::from_utf8(table.stdout.clone()).unwrap();
    assert!(table.status.success(), "{table:?}");
    assert!(
        text.contains("cli-behind") && text.contains("3 notifications"),
        "{text}"
    );

    let breaches = json_of(&admin(&bed, "cz-ops", &url, &["breaches", "--json"]));
    assert_eq!(breaches["signals"].as_array().map(Vec::len), Some(0));
    let verified = json_of(&admin(&bed, "cz-ops", &url, &["audit-verify", "--json"]));
    assert_eq!(verified["done"], true);
    assert_eq!(verified["clean"], true);

    // Not an operator: 77, and the refusal is audited.
    let refused = admin(&bed, "cz-eeb", &url, &["status"]);
    assert_eq!(refused.status.code(), Some(77), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("PermissionDenied"),
        "{refused:?}"
    );
    assert_eq!(operations_refusals(&bed, "cz-eeb").await.len(), 1);
    let refused = admin(&bed, "cz-psb", &url, &["audit-verify"]);
    assert_eq!(refused.status.code(), Some(77), "{refused:?}");
    // Bad usage: 64.
    let bad = admin(&bed, "cz-ops", &url, &["breaches", "--region", "14"]);
    assert_eq!(bad.status.code(), Some(64), "{bad:?}");

    // Nobody listens there: 69.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let unreachable = admin(&bed, "cz-ops", &format!("https://{closed}"), &["status"]);
    assert_eq!(unreachable.status.code(), Some(69), "{unreachable:?}");
}

/// Runs one statement on the test bed's database.
async fn execute(bed: &Testbed, sql: &str) {
    let mut conn = bed.connect_database().await;
    sqlx::query(sql)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_audit_row_is_reported_and_the_command_exits_65() {
    let bed = Testbed::start().expect("test bed");
    let mut bureau = bed.client("cz-eeb").await;
    publish_clues(&mut bureau, "tm-", "CZ-TM-1", 0..3).await;
    match bed.backend() {
        Backend::Sqlite => execute(&bed, "DROP TRIGGER audit_log_no_update").await,
        Backend::Postgres => execute(&bed, "DROP TRIGGER audit_log_no_change ON audit_log").await,
    }
    execute(
        &bed,
        "UPDATE audit_log SET reason = 'rewritten' WHERE id = (SELECT MIN(id) FROM audit_log)",
    )
    .await;
    let first: i64 = {
        let mut conn = bed.connect_database().await;
        sqlx::query_scalar("SELECT MIN(id) FROM audit_log")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };

    let mut ops = operations(&bed, "cz-ops").await;
    let mut stream = ops
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(message) = stream.message().await.unwrap() {
        last = Some(message);
    }
    let last = last.expect("a result");
    assert!(last.done && !last.clean, "{last:?}");
    assert!(
        last.problems[0].starts_with(&format!("changed at row {first}")),
        "the rewritten row is named first: {:?}",
        last.problems
    );
    assert!(
        last.problems.iter().any(|p| p.starts_with("trigger")),
        "the missing trigger is reported: {:?}",
        last.problems
    );

    let output = admin(&bed, "cz-ops", &bed.gateway.url(), &["audit-verify"]);
    assert_eq!(output.status.code(), Some(65), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("problem(s)") && text.contains("changed at row"),
        "{text}"
    );
    let json = admin(
        &bed,
        "cz-ops",
        &bed.gateway.url(),
        &["audit-verify", "--json"],
    );
    assert_eq!(json.status.code(), Some(65), "{json:?}");
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["clean"], false);
}
