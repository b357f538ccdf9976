//! The operators' controls against the real gateway binary, on either
//! backend: disabling an agency ends its streams, refuses its publishes
//! and its connections, survives a restart and is lifted by enabling it;
//! moving a subscription's position replays from there; only operators
//! may do either, each change is audited, and the `admin` command line
//! does the same with an operator's certificate.

use std::process::Command;
use std::time::Duration;

use sqlx::Row;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

use liandong_core::pb;
use liandong_core::pb::operations_client::OperationsClient;
use liandong_tests::{
    Subscriber, Testbed, binary, notification, publish, publish_clues, skip_unless_postgres,
};

const WAIT: Duration = Duration::from_secs(10);

async fn operations(bed: &Testbed, agency: &str) -> OperationsClient<Channel> {
    let channel = bed
        .pki
        .credentials(agency)
        .connect(&bed.gateway.url(), None)
        .await
        .expect("connect to the gateway");
    OperationsClient::new(channel)
}

fn clue(id: &str) -> pb::Notification {
    notification(
        id,
        "CZ-CTL-1",
        pb::EventType::ClueShared,
        pb::Confidentiality::Internal,
        &[],
    )
}

fn disable_request(agency: &str, reason: &str) -> pb::DisableAgencyRequest {
    pb::DisableAgencyRequest {
        agency: agency.into(),
        reason: reason.into(),
    }
}

fn enable_request(agency: &str, reason: &str) -> pb::EnableAgencyRequest {
    pb::EnableAgencyRequest {
        agency: agency.into(),
        reason: reason.into(),
    }
}

/// The audit rows of `action`: (agency, decision, reason, peer).
async fn audit_rows(bed: &Testbed, action: &str) -> Vec<(String, String, String, String)> {
    let mut conn = bed.connect_database().await;
    sqlx::query(
        "SELECT agency, decision, reason, peer FROM audit_log WHERE action = $1 ORDER BY id",
    )
    .bind(action)
    .fetch_all(&mut conn)
    .await
    .expect("read the audit log")
    .iter()
    .map(|row| {
        (
            row.get("agency"),
            row.get("decision"),
            row.get("reason"),
            row.get("peer"),
        )
    })
    .collect()
}

/// Connection refusals naming `agency` as disabled, in the audit log.
async fn disabled_connection_refusals(bed: &Testbed, agency: &str) -> usize {
    let needle = format!("agency {agency} is disabled by an operator");
    audit_rows(bed, "TLS_REFUSED")
        .await
        .into_iter()
        .filter(|(_, _, reason, _)| reason.contains(&needle))
        .count()
}

/// A new connection of `agency` gets nothing done: its handshake may
/// complete, but the gateway closes it before any request is answered, and
/// records the refusal.
async fn new_connection_is_refused(bed: &Testbed, agency: &str) {
    let before = disabled_connection_refusals(bed, agency).await;
    if let Ok(mut client) = bed.client_with(&bed.pki.credentials(agency)).await {
        let refused = publish(&mut client, clue(&format!("{agency}-late-{before}"))).await;
        assert!(
            refused.is_err(),
            "a disabled agency's new connection published: {refused:?}"
        );
    }
    let deadline = std::time::Instant::now() + WAIT;
    while disabled_connection_refusals(bed, agency).await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no audited refusal of {agency}'s new connection:\n{}",
            bed.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_disabled_agency_loses_its_streams_publishes_and_connections_until_enabled() {
    let mut bed = Testbed::start().unwrap();
    let mut ops = operations(&bed, "cz-ops").await;
    let mut eeb = bed.client("cz-eeb").await;
    let before = publish(&mut eeb, clue("eeb-before")).await.unwrap();

    // An open subscription stream and an open publishing stream.
    let mut subscriber = Subscriber::open(&mut eeb, "eeb-main").await.unwrap();
    let first = subscriber
        .expect_delivery(WAIT, "the clue published before")
        .await;
    assert_eq!(first.sequence, before.sequence);
    subscriber.ack(&[first.sequence]).await;
    let (requests, rx) = mpsc::channel(4);
    let mut receipts = eeb
        .publish_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(pb::PublishRequest {
            notification: Some(clue("eeb-stream-1")),
        })
        .await
        .unwrap();
    let streamed = receipts.message().await.unwrap().expect("a receipt");
    let second = subscriber
        .expect_delivery(WAIT, "the clue published on the stream")
        .await;
    assert_eq!(second.sequence, streamed.sequence);
    subscriber.ack(&[second.sequence]).await;
    let stored = bed.stored_count().await;

    let state = ops
        .disable_agency(disable_request("cz-eeb", "signing key compromised"))
        .await
        .unwrap()
        .into_inner();
    assert!(state.disabled && state.changed, "{state:?}");
    assert_eq!(
        (state.reason.as_str(), state.disabled_by.as_str()),
        ("signing key compromised", "cz-ops")
    );

    // The subscription stream ends at once, saying why.
    let ended = subscriber
        .expect_failure(Duration::from_secs(1), "the disabled agency's subscription")
        .await;
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    assert!(
        ended
            .message()
            .contains("agency cz-eeb is disabled by an operator: signing key compromised"),
        "{ended:?}"
    );
    // The publishing stream stores nothing more.
    let _ = requests
        .send(pb::PublishRequest {
            notification: Some(clue("eeb-stream-2")),
        })
        .await;
    let refused = receipts.message().await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("disabled by an operator"));
    // Its connections are closed: a unary publish on the old client gets
    // nothing stored, and so does a new connection.
    let unary = publish(&mut eeb, clue("eeb-after")).await;
    assert!(unary.is_err(), "{unary:?}");
    new_connection_is_refused(&bed, "cz-eeb").await;
    assert_eq!(bed.stored_count().await, stored);

    // Operators see it in the status and the agency list.
    let status = ops
        .get_status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.disabled_agencies, ["cz-eeb"]);
    let agencies = ops
        .list_agencies(pb::ListAgenciesRequest {})
        .await
        .unwrap()
        .into_inner()
        .agencies;
    let states: Vec<_> = agencies
        .iter()
        .filter_map(|a| a.state.as_ref())
        .filter(|state| state.disabled)
        .map(|state| (state.agency.as_str(), state.reason.as_str()))
        .collect();
    assert_eq!(states, [("cz-eeb", "signing key compromised")]);

    // Other agencies are untouched.
    let mut psb = bed.client("cz-psb").await;
    publish(&mut psb, clue("psb-during")).await.unwrap();

    // Audited once, with the operator and the address it came from; the
    // refused publish and the closed connections too.
    let again = ops
        .disable_agency(disable_request("cz-eeb", "another reason"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.disabled && !again.changed, "{again:?}");
    assert_eq!(again.reason, "signing key compromised");
    let disabled = audit_rows(&bed, "AGENCY_DISABLED").await;
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    let (operator, decision, reason, peer) = &disabled[0];
    assert_eq!(
        (operator.as_str(), decision.as_str(), reason.as_str()),
        (
            "cz-ops",
            "DISABLED",
            "agency cz-eeb: signing key compromised"
        )
    );
    assert!(peer.starts_with("127.0.0.1:"), "{peer:?}");
    let refused_publishes = audit_rows(&bed, "PUBLISH_REFUSED").await;
    assert!(
        refused_publishes
            .iter()
            .any(|(agency, decision, reason, _)| agency == "cz-eeb"
                && decision == "PERMISSION_DENIED"
                && reason.contains("disabled by an operator")),
        "{refused_publishes:?}"
    );

    // A restart keeps it disabled.
    bed.gateway.signal(nix::sys::signal::Signal::SIGTERM);
    bed.gateway.wait(WAIT).unwrap();
    bed.restart().unwrap();
    new_connection_is_refused(&bed, "cz-eeb").await;
    let mut ops = operations(&bed, "cz-ops").await;

    // Enabled: it publishes and subscribes again, resuming after its ack.
    let enabled = ops
        .enable_agency(enable_request("cz-eeb", "key replaced"))
        .await
        .unwrap()
        .into_inner();
    assert!(!enabled.disabled && enabled.changed, "{enabled:?}");
    let enabled_rows = audit_rows(&bed, "AGENCY_ENABLED").await;
    assert_eq!(enabled_rows.len(), 1);
    assert_eq!(enabled_rows[0].2, "agency cz-eeb: key replaced");
    let mut eeb = bed.client("cz-eeb").await;
    let after = publish(&mut eeb, clue("eeb-after-enable")).await.unwrap();
    let mut subscriber = Subscriber::open(&mut eeb, "eeb-main").await.unwrap();
    let mut sequences = Vec::new();
    while sequences.last() != Some(&after.sequence) {
        let delivery = subscriber.expect_delivery(WAIT, "deliveries again").await;
        sequences.push(delivery.sequence);
    }
    assert!(
        !sequences.contains(&before.sequence),
        "resumes after its acknowledgement: {sequences:?}"
    );
}

#[tokio::test]
async fn controls_are_for_operators_only_and_an_operator_cannot_disable_itself() {
    let bed = Testbed::start().unwrap();
    let mut eeb_ops = operations(&bed, "cz-eeb").await;
    let denied = [
        eeb_ops
            .disable_agency(disable_request("cz-psb", "takeover"))
            .await
            .unwrap_err(),
        eeb_ops
            .enable_agency(enable_request("cz-psb", "takeover"))
            .await
            .unwrap_err(),
        eeb_ops
            .seek_subscription(pb::SeekSubscriptionRequest {
                owner: "cz-psb".into(),
                name: "main".into(),
                acked_through: 0,
                reason: "takeover".into(),
            })
            .await
            .unwrap_err(),
    ];
    for status in &denied {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let refusals: Vec<_> = audit_rows(&bed, "OPERATIONS_REFUSED")
        .await
        .into_iter()
        .filter(|(agency, decision, ..)| agency == "cz-eeb" && decision == "PERMISSION_DENIED")
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:?}");

    let mut ops = operations(&bed, "cz-ops").await;
    let itself = ops
        .disable_agency(disable_request("cz-ops", "testing"))
        .await
        .unwrap_err();
    assert_eq!(itself.code(), Code::FailedPrecondition, "{itself:?}");
    let unknown = ops
        .disable_agency(disable_request("cz-nobody", "testing"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let no_reason = ops
        .disable_agency(disable_request("cz-psb", ""))
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument, "{no_reason:?}");
    assert!(audit_rows(&bed, "AGENCY_DISABLED").await.is_empty());
    // Nobody was disabled: the operator and the others still work.
    let mut psb = bed.client("cz-psb").await;
    publish(&mut psb, clue("psb-still")).await.unwrap();
}

#[tokio::test]
async fn seek_replays_from_the_new_position_audited_and_not_while_connected() {
    let bed = Testbed::start().unwrap();
    let mut ops = operations(&bed, "cz-ops").await;
    let mut eeb = bed.client("cz-eeb").await;
    let receipts = publish_clues(&mut eeb, "seek-", "CZ-SEEK-1", 0..3).await;
    let sequences: Vec<u64> = receipts.iter().map(|r| r.sequence).collect();

    let mut psb = bed.client("cz-psb").await;
    let mut subscriber = Subscriber::open(&mut psb, "psb-main").await.unwrap();
    let taken = subscriber.take_acked(3, WAIT).await;
    assert_eq!(
        taken.iter().map(|d| d.sequence).collect::<Vec<_>>(),
        sequences
    );
    let seek = |to: u64, name: &str| pb::SeekSubscriptionRequest {
        owner: "cz-psb".into(),
        name: name.into(),
        acked_through: to,
        reason: "replay after a lost database".into(),
    };
    let connected = ops
        .seek_subscription(seek(sequences[0], "psb-main"))
        .await
        .unwrap_err();
    assert_eq!(connected.code(), Code::FailedPrecondition, "{connected:?}");
    assert!(subscriber.close().await.unwrap().is_empty());

    let beyond = ops
        .seek_subscription(seek(sequences[2] + 1000, "psb-main"))
        .await
        .unwrap_err();
    assert_eq!(beyond.code(), Code::InvalidArgument, "{beyond:?}");
    let unknown = ops
        .seek_subscription(seek(0, "psb-none"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    let state = ops
        .seek_subscription(seek(sequences[0], "psb-main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            state.owner.as_str(),
            state.name.as_str(),
            state.acked_through
        ),
        ("cz-psb", "psb-main", sequences[0])
    );
    let seeks = audit_rows(&bed, "SUBSCRIPTION_SEEK").await;
    assert_eq!(seeks.len(), 1, "{seeks:?}");
    assert_eq!(seeks[0].0, "cz-ops");
    assert_eq!(
        seeks[0].2,
        format!(
            "subscription cz-psb/psb-main: {} -> {}: replay after a lost database",
            sequences[2], sequences[0]
        )
    );

    // Reconnected, it gets the two after the new position again.
    let mut subscriber = Subscriber::open(&mut psb, "psb-main").await.unwrap();
    let replayed = subscriber.take_acked(2, WAIT).await;
    assert_eq!(
        replayed.iter().map(|d| d.sequence).collect::<Vec<_>>(),
        &sequences[1..]
    );
    subscriber
        .expect_silence(
            Duration::from_millis(500),
            "nothing before the new position",
        )
        .await;
}

#[tokio::test]
async fn a_disable_through_one_replica_is_enforced_by_the_others() {
    if skip_unless_postgres("several gateway replicas share one PostgreSQL database") {
        return;
    }
    let bed = Testbed::start().unwrap();
    let replica = bed.start_replica("b").unwrap();
    let mut eeb_b = bed.client_of(&replica, "cz-eeb").await;
    let mut subscriber = Subscriber::open(&mut eeb_b, "eeb-b").await.unwrap();
    subscriber
        .expect_silence(Duration::from_millis(200), "nothing stored yet")
        .await;

    let mut ops = operations(&bed, "cz-ops").await;
    ops.disable_agency(disable_request("cz-eeb", "incident"))
        .await
        .unwrap();
    // The other replica follows the store: its stream ends, saying why.
    let ended = subscriber
        .expect_failure(WAIT, "the stream on the other replica")
        .await;
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    assert!(
        ended
            .message()
            .contains("disabled by an operator: incident")
    );
    // A new connection there gets nothing stored.
    if let Some(mut eeb_b) = replica_client(&bed, &replica, "cz-eeb").await {
        let refused = publish(&mut eeb_b, clue("eeb-b-after")).await;
        assert!(refused.is_err(), "{refused:?}");
    }

    ops.enable_agency(enable_request("cz-eeb", "incident closed"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(mut client) = replica_client(&bed, &replica, "cz-eeb").await
            && publish(&mut client, clue("eeb-b-enabled")).await.is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other replica did not follow the enable"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A new client of `agency` on `replica`, or `None` when the connection
/// itself is refused.
async fn replica_client(
    bed: &Testbed,
    replica: &liandong_tests::GatewayProcess,
    agency: &str,
) -> Option<liandong_core::pb::exchange_client::ExchangeClient<Channel>> {
    let channel = bed
        .pki
        .credentials(agency)
        .connect(&replica.url(), None)
        .await
        .ok()?;
    Some(liandong_core::pb::exchange_client::ExchangeClient::new(
        channel,
    ))
}

/// Runs `liandong-gateway admin` with `agency`'s certificate.
fn admin(bed: &Testbed, agency: &str, args: &[&str]) -> std::process::Output {
    let pki = &bed.pki.dir;
    Command::new(binary("liandong-gateway"))
        .arg("admin")
        .arg("--gateway")
        .arg(bed.gateway.url())
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("agencies").join(format!("{agency}.crt")))
        .arg("--key")
        .arg(pki.join("agencies").join(format!("{agency}.key")))
        .args(args)
        .output()
        .expect("run liandong-gateway admin")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn admin_disables_and_enables_with_an_operator_certificate_only() {
    let bed = Testbed::start().unwrap();
    let disabled = admin(&bed, "cz-ops", &["disable", "cz-eeb", "--reason", "audit"]);
    assert_eq!(disabled.status.code(), Some(0), "{disabled:?}");
    assert_eq!(stdout(&disabled), "cz-eeb disabled: audit\n");
    new_connection_is_refused(&bed, "cz-eeb").await;

    let again = admin(&bed, "cz-ops", &["disable", "cz-eeb", "--reason", "audit"]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        stdout(&again),
        "cz-eeb already disabled (by cz-ops: audit)\n"
    );

    let enabled = admin(
        &bed,
        "cz-ops",
        &["--json", "enable", "cz-eeb", "--reason", "audit done"],
    );
    assert_eq!(enabled.status.code(), Some(0), "{enabled:?}");
    let json: serde_json::Value = serde_json::from_slice(&enabled.stdout).unwrap();
    assert_eq!(json["agency"], "cz-eeb");
    assert_eq!(json["disabled"], false);
    assert_eq!(json["changed"], true);
    let mut eeb = bed.client("cz-eeb").await;
    let receipt = publish(&mut eeb, clue("eeb-cli")).await.unwrap();

    // Seek, as JSON: the subscription's state.
    let mut subscriber = Subscriber::open(&mut eeb, "eeb-cli").await.unwrap();
    subscriber.take_acked(1, WAIT).await;
    subscriber.close().await.unwrap();
    let seek = admin(
        &bed,
        "cz-ops",
        &[
            "--json", "seek", "cz-eeb", "eeb-cli", "--to", "0", "--reason", "replay",
        ],
    );
    assert_eq!(seek.status.code(), Some(0), "{seek:?}");
    let json: serde_json::Value = serde_json::from_slice(&seek.stdout).unwrap();
    assert_eq!(json["owner"], "cz-eeb");
    assert_eq!(json["name"], "eeb-cli");
    assert_eq!(json["acked_through"], 0);
    assert!(receipt.sequence > 0);

    // Not an operator: exit 77, nothing changed.
    let denied = admin(
        &bed,
        "cz-eeb",
        &["disable", "cz-psb", "--reason", "takeover"],
    );
    assert_eq!(denied.status.code(), Some(77), "{denied:?}");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("PermissionDenied"),
        "{denied:?}"
    );
    let mut psb = bed.client("cz-psb").await;
    publish(&mut psb, clue("psb-cli")).await.unwrap();
    // An empty reason is bad usage.
    let usage = admin(&bed, "cz-ops", &["disable", "cz-psb", "--reason", ""]);
    assert_eq!(usage.status.code(), Some(64), "{usage:?}");
}
