//! Several gateway replicas on one PostgreSQL database: a durable
//! subscription is served by one replica at a time (its lease in the
//! database), a subscriber moves between replicas without loss, a replica
//! that dies is waited for until its lease expires, and the timers every
//! replica runs (deadlines, statistics reports, audit checkpoints) fire
//! once. Tests of several replicas skip on SQLite; those of one gateway
//! losing its lease run on both backends.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;

use liandong_core::pb::exchange_client::ExchangeClient;
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{
    GatewayProcess, Next, Subscriber, TEST_LEASE_SECONDS, Testbed, binary, notification, publish,
    publish_clues, publish_county_transfer_received, skip_unless_postgres,
};

/// A generous functional timeout for one step on a loaded machine.
const WAIT: Duration = Duration::from_secs(20);

/// The longest an open waits for another replica to hand a subscription
/// over: the lease plus the gateway's margin (two seconds).
fn takeover_wait(lease_seconds: u64) -> Duration {
    Duration::from_secs(lease_seconds + 2)
}

/// The case every clue of these tests is shared on.
const CASE: &str = "CZ-REPL-1";

fn clue(id: &str) -> pb::Notification {
    notification(id, CASE, Event::ClueShared, Level::Internal, &[])
}

/// Opens `name` from the beginning.
fn open(name: &str) -> pb::SubscriptionOpen {
    pb::SubscriptionOpen {
        name: name.to_owned(),
        start: Some(pb::StartPosition {
            position: Some(pb::start_position::Position::Beginning(true)),
        }),
        ..Default::default()
    }
}

/// Publishes clues `{prefix}{i}` on [`CASE`] for `i` in `range` through
/// `client`; their sequences, in order.
async fn publish_some(
    client: &mut ExchangeClient<Channel>,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> Vec<u64> {
    publish_clues(client, prefix, CASE, range)
        .await
        .iter()
        .map(|receipt| receipt.sequence)
        .collect()
}

/// The next `count` deliveries' sequences (each within `WAIT`), acked
/// when `ack`.
async fn receive(subscriber: &mut Subscriber, count: usize, ack: bool, what: &str) -> Vec<u64> {
    let mut sequences = Vec::new();
    while sequences.len() < count {
        let delivery = subscriber.expect_delivery(WAIT, what).await;
        if ack {
            subscriber.ack(&[delivery.sequence]).await;
        }
        sequences.push(delivery.sequence);
    }
    sequences
}

/// The subscription's stored cursor.
async fn cursor(bed: &Testbed, owner: &str, name: &str) -> Option<u64> {
    let mut conn = bed.connect_database().await;
    let cursor: Option<i64> = sqlx::query_scalar(
        "SELECT acked_through FROM subscriptions WHERE owner = $1 AND name = $2",
    )
    .bind(owner)
    .bind(name)
    .fetch_optional(&mut conn)
    .await
    .unwrap();
    cursor.map(|c| c as u64)
}

/// Waits until the subscription's stored cursor reaches `through` (the
/// session writes it at most every second).
async fn wait_for_cursor(bed: &Testbed, owner: &str, name: &str, through: u64) {
    let deadline = Instant::now() + WAIT;
    while cursor(bed, owner, name).await.unwrap_or(0) < through {
        assert!(
            Instant::now() < deadline,
            "the cursor of {owner}/{name} did not reach {through}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The instance holding the subscription's lease, whether or not it
/// expired.
async fn lease_holder(bed: &Testbed, owner: &str, name: &str) -> Option<String> {
    let mut conn = bed.connect_database().await;
    sqlx::query_scalar("SELECT holder FROM subscription_leases WHERE owner = $1 AND name = $2")
        .bind(owner)
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
}

/// Asserts that a takeover ended `subscriber`'s stream as replaced.
async fn expect_replaced(subscriber: &mut Subscriber, what: &str) {
    let status = subscriber.expect_failure(WAIT, what).await;
    assert_eq!(status.code(), Code::Aborted, "{what}: {status:?}");
    assert!(
        status.message().contains("opened by a newer connection"),
        "{what}: {status:?}"
    );
}

#[tokio::test]
async fn subscription_held_by_one_replica_at_a_time() {
    if skip_unless_postgres("several gateway replicas share one PostgreSQL database") {
        return;
    }
    let bed = Testbed::start().unwrap();
    let replica = bed.start_replica("b").unwrap();
    let mut eeb_a = bed.client("cz-eeb").await;
    let mut eeb_b = bed.client_of(&replica, "cz-eeb").await;

    // Opened on A, received there; the first two acknowledged.
    let mut psb_a = bed.client("cz-psb").await;
    let mut on_a = Subscriber::open_with(&mut psb_a, open("one"))
        .await
        .unwrap();
    let holder_a = lease_holder(&bed, "cz-psb", "one").await.unwrap();
    let first = publish_some(&mut eeb_a, "one-", 0..4).await;
    let got_a = receive(&mut on_a, 4, false, "A's deliveries").await;
    assert_eq!(got_a, first);
    on_a.ack(&first[..2]).await;
    wait_for_cursor(&bed, "cz-psb", "one", first[1]).await;

    // Opened on B: A's stream ends as replaced, B resumes after A's last
    // acknowledgement.
    let mut psb_b = bed.client_of(&replica, "cz-psb").await;
    let asked = Instant::now();
    let mut on_b = Subscriber::open_with(&mut psb_b, open("one"))
        .await
        .unwrap();
    let handed_over = asked.elapsed();
    expect_replaced(&mut on_a, "A's stream once B opened the subscription").await;
    let holder_b = lease_holder(&bed, "cz-psb", "one").await.unwrap();
    assert_ne!(holder_a, holder_b, "the lease moved to B");
    let resumed = receive(&mut on_b, 2, true, "B resuming after A's last ack").await;
    assert_eq!(
        resumed,
        first[2..],
        "B starts after A's last acknowledgement"
    );

    // More, stored through both replicas: only B receives them, in order.
    let mut more = publish_some(&mut eeb_a, "one-a-", 0..3).await;
    more.extend(publish_some(&mut eeb_b, "one-b-", 0..3).await);
    let got_b = receive(&mut on_b, more.len(), true, "B's deliveries").await;
    assert_eq!(got_b, more, "in order, none lost");
    assert!(
        matches!(
            on_a.next_event(Duration::from_millis(200)).await,
            Next::Ended
        ),
        "A's stream is over"
    );
    // Delivered to both: only what A had not acknowledged.
    let both: BTreeSet<u64> = got_a
        .iter()
        .filter(|s| resumed.contains(s) || got_b.contains(s))
        .copied()
        .collect();
    assert_eq!(both, first[2..].iter().copied().collect());
    wait_for_cursor(&bed, "cz-psb", "one", *more.last().unwrap()).await;

    // And back: opened on A again, B's stream ends, A resumes after B's
    // last acknowledgement.
    let mut psb_a = bed.client("cz-psb").await;
    let asked = Instant::now();
    let mut again = Subscriber::open_with(&mut psb_a, open("one"))
        .await
        .unwrap();
    eprintln!(
        "hand-over between live replicas: A to B {handed_over:?}, B to A {:?}",
        asked.elapsed()
    );
    expect_replaced(&mut on_b, "B's stream once A opened it again").await;
    assert_eq!(
        lease_holder(&bed, "cz-psb", "one").await.unwrap(),
        holder_a,
        "the lease is A's again"
    );
    let last = publish_some(&mut eeb_b, "one-c-", 0..2).await;
    let got = receive(&mut again, 2, true, "A's deliveries after it took over").await;
    assert_eq!(got, last, "nothing B acknowledged comes again");
    assert!(matches!(
        on_b.next_event(Duration::from_millis(200)).await,
        Next::Ended
    ));
}

#[tokio::test]
async fn replica_killed_mid_stream_subscriber_resumes_on_other() {
    if skip_unless_postgres("several gateway replicas share one PostgreSQL database") {
        return;
    }
    let mut bed = Testbed::start().unwrap();
    let replica = bed.start_replica("b").unwrap();

    // A stream of publishes through B, which stays up.
    const TOTAL: usize = 60;
    let mut eeb_b = bed.client_of(&replica, "cz-eeb").await;
    let publisher = tokio::spawn(async move {
        let mut sequences = Vec::new();
        for i in 0..TOTAL {
            sequences.extend(publish_some(&mut eeb_b, "kill-", i..i + 1).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sequences
    });

    // The subscriber, on A, acknowledges the first 20 (and waits until
    // that is stored), then receives 10 more it does not acknowledge.
    let mut psb_a = bed.client("cz-psb").await;
    let mut on_a = Subscriber::open_with(&mut psb_a, open("kill"))
        .await
        .unwrap();
    let acked = receive(&mut on_a, 20, true, "A's first deliveries").await;
    wait_for_cursor(&bed, "cz-psb", "kill", *acked.last().unwrap()).await;
    let unacked = receive(&mut on_a, 10, false, "A's later deliveries").await;
    bed.gateway.signal(nix::sys::signal::Signal::SIGKILL);
    bed.gateway.wait(WAIT).unwrap();
    let stored_cursor = cursor(&bed, "cz-psb", "kill").await.unwrap();
    assert_eq!(stored_cursor, *acked.last().unwrap());

    // Reopened on B: it waits for A's lease to expire, then resumes
    // after the last acknowledgement.
    let mut psb_b = bed.client_of(&replica, "cz-psb").await;
    let reopened = Instant::now();
    let mut on_b = Subscriber::open_with(&mut psb_b, open("kill"))
        .await
        .expect("opened on B once A's lease expired");
    let waited = reopened.elapsed();
    assert!(
        waited <= takeover_wait(TEST_LEASE_SECONDS) + Duration::from_secs(5),
        "the open waited {waited:?}"
    );
    let published = publisher.await.unwrap();
    assert_eq!(published.len(), TOTAL);
    let after: Vec<u64> = published
        .iter()
        .copied()
        .filter(|s| *s > stored_cursor)
        .collect();
    let got_b = receive(&mut on_b, after.len(), true, "B's deliveries").await;
    assert_eq!(got_b, after, "every sequence after the cursor, in order");
    let mut all: BTreeSet<u64> = acked.iter().copied().collect();
    all.extend(&unacked);
    all.extend(&got_b);
    assert_eq!(
        all,
        published.iter().copied().collect(),
        "none lost across the kill"
    );
    // Duplicates: only what A had sent and not seen acknowledged.
    let twice: Vec<u64> = unacked
        .iter()
        .copied()
        .filter(|s| got_b.contains(s))
        .collect();
    assert_eq!(twice, unacked);
    assert!(acked.iter().all(|s| !got_b.contains(s)));
    eprintln!(
        "reopen on the other replica after kill -9 waited {waited:?} (lease {TEST_LEASE_SECONDS} s)"
    );
}

/// The police filing rule with a drill period of four seconds.
const DRILL_RULES: &str = r#"
[[deadline]]
name = "police-filing-decision"
legal_basis = "《环境保护行政执法与刑事司法衔接工作办法》（2017）：3日内作出立案或者不予立案的决定（演练：4秒）"
starts_on = ["TRANSFER_RECEIVED"]
stops_on = ["CASE_FILED", "FILING_DECLINED"]
period = { amount = 4, unit = "seconds" }
roll_to_working_day = false
late = "starter"
supervisor = "procuratorate"
alert = true
"#;

/// Moves the one stored notification's arrival back by `days` (its chain
/// link and the chain head recomputed, as if it had been stored then):
/// history from before the last report period ended.
async fn backdate_first_notification(bed: &Testbed, days: i64) {
    let mut conn = bed.connect_database().await;
    let (received_at, hash, copies): (i64, Vec<u8>, String) = sqlx::query_as(
        "SELECT received_at, content_hash, copies FROM notifications WHERE sequence = 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let earlier = received_at - days * 86_400 * 1_000_000;
    let link = liandong_gateway::store::integrity::row_link(None, 1, earlier, &hash, &copies);
    sqlx::query("UPDATE notifications SET received_at = $1, chain = $2 WHERE sequence = 1")
        .bind(earlier)
        .bind(&link)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE store_state SET last_chain = $1 WHERE id = 1")
        .bind(&link)
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn timers_fire_once_with_two_replicas() {
    if skip_unless_postgres("several gateway replicas share one PostgreSQL database") {
        return;
    }
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("drill-deadlines.toml");
    std::fs::write(&rules, DRILL_RULES).unwrap();
    let mut bed = Testbed::start_with(&format!(
        "\n[mechanism]\ndeadlines = \"{}\"\n\n[audit]\ncheckpoint_rows = 5\n",
        rules.display()
    ))
    .unwrap();

    // History from before last month ended, so that the monthly
    // statistics report of that period is due when the replicas start.
    let mut eeb = bed.client("cz-eeb").await;
    publish(&mut eeb, clue("history-1")).await.unwrap();
    bed.gateway.signal(nix::sys::signal::Signal::SIGTERM);
    bed.gateway.wait(WAIT).unwrap();
    backdate_first_notification(&bed, 40).await;

    // Both replicas start together: each runs its timers at once.
    let (config, log_b) = (bed.config.clone(), bed.dir.path().join("gateway-b.log"));
    let replica = std::thread::scope(|scope| {
        let b = scope.spawn(|| GatewayProcess::start(&config, &log_b));
        bed.restart().unwrap();
        b.join().unwrap().unwrap()
    });

    // Several deadlines due at the same moment, started through both.
    const CASES: usize = 6;
    let mut started = Vec::new();
    for i in 0..CASES {
        let gateway = if i % 2 == 0 { &bed.gateway } else { &replica };
        let mut bureau = bed.client_of(gateway, "cz-eeb-xiangyuan").await;
        let mut police = bed.client_of(gateway, "cz-psb-xiangyuan").await;
        started.push(tokio::spawn(async move {
            publish_county_transfer_received(
                &mut bureau,
                &mut police,
                &format!("CZ-2026-REPL-{i:03}"),
                &format!("repl-t-{i}"),
                &format!("repl-r-{i}"),
            )
            .await
        }));
    }
    for task in started {
        task.await.unwrap();
    }

    // Wait until every clock fired and every report was sent.
    let registry =
        liandong_core::registry::Registry::load(&bed.dir.path().join("agencies.toml")).unwrap();
    let members = registry
        .agencies()
        .filter(|agency| agency.role.is_member())
        .count() as i64;
    let mut conn = bed.connect_database().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let breached: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deadlines WHERE breached_at IS NOT NULL")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let reported: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM report_runs")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if breached == CASES as i64 && reported == members {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{breached} of {CASES} deadlines fired, {reported} of {members} reports sent"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Time for a second firing to show, had there been one (both timers
    // look again within this).
    tokio::time::sleep(Duration::from_secs(3)).await;

    // One SUPERVISION_ALERT per breach.
    let alerts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT case_ref, COUNT(*) FROM notifications WHERE event = $1 \
         GROUP BY case_ref ORDER BY case_ref",
    )
    .bind(Event::SupervisionAlert as i32 as i64)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(alerts.len(), CASES, "{alerts:?}");
    assert!(alerts.iter().all(|(_, n)| *n == 1), "{alerts:?}");
    let marked: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT alert_sequence) FROM deadlines WHERE alert_sequence IS NOT NULL",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(marked, CASES as i64);

    // One statistics report per member agency for the period.
    let reports: Vec<(String, i64)> = sqlx::query_as(
        "SELECT recipients, COUNT(*) FROM notifications WHERE event = $1 \
         GROUP BY recipients ORDER BY recipients",
    )
    .bind(Event::StatisticsReport as i32 as i64)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(reports.len() as i64, members, "{reports:?}");
    assert!(reports.iter().all(|(_, n)| *n == 1), "{reports:?}");
    let periods: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT period) FROM report_runs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(periods, 1);

    // Checkpoints: several, never two of the same head.
    let checkpoints: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT row_id, COUNT(*) FROM audit_checkpoints GROUP BY row_id ORDER BY row_id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    assert!(checkpoints.iter().all(|(_, n)| *n == 1), "{checkpoints:?}");

    // The audit chain verifies, checkpoints included.
    let verified = Command::new(binary("liandong-gateway"))
        .args(["audit", "verify", "--json", "--config"])
        .arg(&bed.config)
        .env("LIANDONG_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        verified.status.code(),
        Some(0),
        "audit verify: {}",
        String::from_utf8_lossy(&verified.stdout)
    );
    // Which replica did what (the race is real when both did some).
    let log_b = std::fs::read_to_string(bed.dir.path().join("gateway-b.log")).unwrap_or_default();
    for (name, log) in [("A", bed.log()), ("B", log_b)] {
        eprintln!(
            "replica {name}: {} alerts, {} checkpoints, {} report rounds",
            log.matches("supervision alert stored").count(),
            log.matches("audit chain checkpoint signed").count(),
            log.matches("statistics reports sent").count(),
        );
    }
    drop(replica);
}

/// Restarts the test bed's gateway with a subscription lease of `seconds`.
fn restart_with_lease(bed: &mut Testbed, seconds: u64) {
    bed.gateway.signal(nix::sys::signal::Signal::SIGTERM);
    bed.gateway.wait(WAIT).unwrap();
    let config = std::fs::read_to_string(&bed.config).unwrap();
    let changed = config.replacen(
        &format!("subscription_lease_seconds = {TEST_LEASE_SECONDS}"),
        &format!("subscription_lease_seconds = {seconds}"),
        1,
    );
    assert_ne!(config, changed, "the test bed sets the lease");
    std::fs::write(&bed.config, changed).unwrap();
    bed.restart().unwrap();
}

#[tokio::test]
async fn a_session_whose_lease_cannot_be_renewed_stops_sending() {
    // Six seconds: the session may send for at most four fifths of it
    // after the last renewal that succeeded.
    const LEASE: u64 = 6;
    let mut bed = Testbed::start().unwrap();
    restart_with_lease(&mut bed, LEASE);

    let mut eeb = bed.client("cz-eeb").await;
    let publishing = tokio_util::sync::CancellationToken::new();
    let stop = publishing.clone();
    let publisher = tokio::spawn(async move {
        let mut sequences = Vec::new();
        let mut i = 0;
        while !stop.is_cancelled() {
            sequences.extend(publish_some(&mut eeb, "renew-", i..i + 1).await);
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sequences
    });
    let mut psb = bed.client("cz-psb").await;
    let mut subscriber = Subscriber::open_with(&mut psb, open("renew"))
        .await
        .unwrap();
    let mut received = receive(&mut subscriber, 5, true, "deliveries before the fault").await;

    // Renewals fail from now on (their table is gone); everything else
    // works, publishes included.
    let mut conn = bed.connect_database().await;
    sqlx::query("ALTER TABLE subscription_leases RENAME TO subscription_leases_away")
        .execute(&mut conn)
        .await
        .unwrap();
    let broken = Instant::now();
    let mut last_arrival = broken;
    let status = loop {
        match subscriber.next_event(WAIT).await {
            Next::Delivery(delivery) => {
                last_arrival = Instant::now();
                subscriber.ack(&[delivery.sequence]).await;
                received.push(delivery.sequence);
            }
            Next::Failed(status) => break status,
            other => panic!("expected deliveries, then the lost hold; the stream {other}"),
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("lost its hold")
            && status.message().contains("could not be renewed")
            && status.message().contains("reconnect to resume"),
        "{status:?}"
    );
    // Nothing was sent once the lease could have expired at the database
    // (a full lease after the last renewal, which started before the
    // fault).
    assert!(
        last_arrival < broken + Duration::from_secs(LEASE),
        "a delivery arrived {:?} after renewals broke",
        last_arrival - broken
    );
    publishing.cancel();
    let published = publisher.await.unwrap();

    // Repaired: a new connection resumes after the last acknowledgement,
    // and nothing is lost.
    sqlx::query("ALTER TABLE subscription_leases_away RENAME TO subscription_leases")
        .execute(&mut conn)
        .await
        .unwrap();
    // The session wrote what it had applied of the acknowledgements
    // before it ended; an acknowledgement still on its way when it ended
    // was not applied, and that delivery comes again (at least once).
    let last_acked = *received.last().unwrap();
    let stored = cursor(&bed, "cz-psb", "renew").await.unwrap_or(0);
    assert!(
        stored <= last_acked,
        "the cursor ({stored}) never passes what was acknowledged ({last_acked})"
    );
    let mut psb = bed.client("cz-psb").await;
    let mut resumed = Subscriber::open_with(&mut psb, open("renew"))
        .await
        .unwrap();
    let rest: Vec<u64> = published.iter().copied().filter(|s| *s > stored).collect();
    let got = receive(&mut resumed, rest.len(), true, "the rest after the repair").await;
    assert_eq!(got, rest, "resumed after the stored cursor, in order");
    received.retain(|s| *s <= stored);
    received.extend(got);
    assert_eq!(received, published, "every sequence, in order, none lost");
}

#[tokio::test]
async fn a_lease_found_taken_at_renewal_ends_the_session() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let mut psb = bed.client("cz-psb").await;
    let mut subscriber = Subscriber::open_with(&mut psb, open("taken"))
        .await
        .unwrap();
    let first = publish_some(&mut eeb, "taken-", 0..2).await;
    assert_eq!(receive(&mut subscriber, 2, true, "before").await, first);
    wait_for_cursor(&bed, "cz-psb", "taken", first[1]).await;

    // Another process's name in the lease, as if it had taken it over.
    let mut conn = bed.connect_database().await;
    let changed = sqlx::query(
        "UPDATE subscription_leases SET holder = 'elsewhere:1:00000000' \
         WHERE owner = 'cz-psb' AND name = 'taken'",
    )
    .execute(&mut conn)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 1);
    let status = subscriber
        .expect_failure(WAIT, "the session whose lease was taken")
        .await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("lost its hold") && status.message().contains("taken over"),
        "{status:?}"
    );

    // The other "holder" never renews: a new open waits for its lease to
    // expire, takes it and resumes after the last acknowledgement.
    let more = publish_some(&mut eeb, "taken-", 2..4).await;
    let mut psb = bed.client("cz-psb").await;
    let asked = Instant::now();
    let mut again = Subscriber::open_with(&mut psb, open("taken"))
        .await
        .unwrap();
    assert!(asked.elapsed() <= takeover_wait(TEST_LEASE_SECONDS) + Duration::from_secs(5));
    let holder = lease_holder(&bed, "cz-psb", "taken").await.unwrap();
    assert_ne!(holder, "elsewhere:1:00000000");
    assert_eq!(receive(&mut again, 2, true, "after").await, more);
}
