//! Metrics, liveness and readiness of the real gateway binary, on the
//! backend `LIANDONG_TEST_BACKEND` chooses.
//!
//! Real traffic (publishes, a refused publish, a subscription with
//! deliveries, a redelivery and acks, a plaintext connection and a revoked
//! certificate on the TLS port, an applied and a refused reload) must show
//! in `/metrics` with its labels and values; then the store is made to
//! fail for real — SQLite: another connection holds the write lock longer
//! than the gateway waits; PostgreSQL: the bed's database refuses
//! connections and the gateway's are terminated — and `/readyz` must
//! answer 503 naming the store while the gRPC health service says
//! NOT_SERVING, and both must recover once the store works again.

mod ops_http;

use std::time::{Duration, Instant};

use sqlx::Connection;
use tonic_health::pb::health_check_response::ServingStatus;

use liandong_core::pb::{Confidentiality as Level, EventType as Event};
use liandong_tests::{Backend, Testbed, notification, publish, publish_clues};

use ops_http::{get, make_traffic, scrape, value, wait_for_value};

/// The gRPC health status of `service` ("" for the whole server), asked
/// as the operator.
async fn health(bed: &Testbed, service: &str) -> i32 {
    let channel = bed
        .pki
        .credentials("cz-ops")
        .connect(&bed.gateway.url(), None)
        .await
        .expect("connect");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// Waits until the server and the Exchange both report `status`.
async fn wait_for_health(bed: &Testbed, status: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if health(bed, "").await == status as i32
            && health(bed, "liandong.v1.Exchange").await == status as i32
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health never became {status:?}:\n{}",
            bed.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `/readyz` answers `status`; returns its body.
async fn wait_for_ready(bed: &Testbed, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (now, body) = get(&bed.gateway.ops_url(), "/readyz").await;
        if now == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {now} ({body}), expected {status}:\n{}",
            bed.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_shows_in_metrics_with_its_labels() {
    let bed = Testbed::start().expect("test bed");

    make_traffic(&bed).await;

    let text = wait_for_value(&bed, r#"liandong_acks_total{agency="cz-psb"}"#, 3.0).await;
    let expect = |series: &str, expected: f64| {
        assert_eq!(value(&text, series), Some(expected), "{series}:\n{text}");
    };
    expect(
        r#"liandong_publishes_total{agency="cz-eeb",event="CLUE_SHARED"}"#,
        3.0,
    );
    expect(
        r#"liandong_refusals_total{agency="cz-eeb",rpc="Exchange.Publish",reason="invalid_argument"}"#,
        1.0,
    );
    expect(r#"liandong_deliveries_total{agency="cz-psb"}"#, 3.0);
    expect(r#"liandong_redeliveries_total{agency="cz-psb"}"#, 1.0);
    expect(
        r#"liandong_tls_handshake_failures_total{reason="plaintext"}"#,
        1.0,
    );
    // The client may try its connection more than once.
    let revoked = value(
        &text,
        r#"liandong_tls_handshake_failures_total{reason="revoked"}"#,
    );
    assert!(revoked >= Some(1.0), "{revoked:?}:\n{text}");
    expect(r#"liandong_reloads_total{outcome="applied"}"#, 1.0);
    expect(r#"liandong_reloads_total{outcome="refused"}"#, 1.0);
    expect("liandong_store_up", 1.0);
    expect("liandong_high_water_sequence", 3.0);
    expect("liandong_notifications", 3.0);

    // Store commit latency: every publish committed, each in a bucket.
    let count = value(
        &text,
        r#"liandong_store_commit_seconds_count{operation="publish"}"#,
    )
    .expect("the publish commits are counted");
    assert!(count >= 3.0, "{count}:\n{text}");
    assert_eq!(
        value(
            &text,
            r#"liandong_store_commit_seconds_bucket{operation="publish",le="+Inf"}"#
        ),
        Some(count),
        "{text}"
    );
    assert!(
        text.contains(r#"liandong_store_commit_seconds_bucket{operation="publish",le="0.005"}"#),
        "{text}"
    );

    // Values read at scrape time.
    assert!(
        value(
            &text,
            r#"liandong_subscription_lag_messages{owner="cz-psb",subscription="metrics-psb"}"#
        )
        .is_some(),
        "{text}"
    );
    assert!(
        value(&text, r#"liandong_agency_connections{agency="cz-eeb"}"#).is_some(),
        "{text}"
    );
    assert!(
        value(&text, "liandong_audit_head_age_seconds").is_some(),
        "{text}"
    );
    let server_days = text
        .lines()
        .find(|line| line.starts_with(r#"liandong_tls_expiry_seconds{kind="server_certificate""#))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .expect("the server certificate's expiry")
        / 86_400.0;
    assert!(server_days > 30.0, "{server_days}:\n{text}");
    let build = format!(
        r#"liandong_build_info{{version="{}",backend="{}"}}"#,
        env!("CARGO_PKG_VERSION"),
        match bed.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    expect(&build, 1.0);

    // Never case content in a label: no case reference, notification id
    // or summary.
    for secret in ["CZ-METRICS-1", "metrics-0", "summary of"] {
        assert!(!text.contains(secret), "{secret} in /metrics:\n{text}");
    }
}

/// Makes the store fail for real; [`Fault::heal`] undoes it.
enum Fault {
    /// Another SQLite connection holds the write lock.
    SqliteLock(sqlx::AnyConnection),
    /// The bed's PostgreSQL database refuses connections.
    PostgresRefusing {
        admin: sqlx::PgConnection,
        database: String,
    },
}

impl Fault {
    async fn induce(bed: &Testbed) -> Self {
        let url = bed.database_url();
        match bed.backend() {
            Backend::Sqlite => {
                let mut conn = sqlx::AnyConnection::connect(&url).await.expect("open");
                sqlx::raw_sql("PRAGMA busy_timeout = 20000; BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .expect("take the write lock");
                Self::SqliteLock(conn)
            }
            Backend::Postgres => {
                let (_, database) = url.rsplit_once('/').expect("a database URL");
                let database = database.split('?').next().unwrap_or(database).to_owned();
                let server = std::env::var(liandong_tests::POSTGRES_URL_VAR)
                    .unwrap_or_else(|_| liandong_tests::DEFAULT_POSTGRES_URL.to_owned());
                let mut admin = sqlx::PgConnection::connect(&server)
                    .await
                    .expect("connect to the server");
                sqlx::query(&format!(
                    "ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false"
                ))
                .execute(&mut admin)
                .await
                .expect("refuse connections");
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&database)
                .execute(&mut admin)
                .await
                .expect("end the gateway's connections");
                Self::PostgresRefusing { admin, database }
            }
        }
    }

    async fn heal(self) {
        match self {
            Self::SqliteLock(mut conn) => {
                sqlx::raw_sql("COMMIT")
                    .execute(&mut conn)
                    .await
                    .expect("release the lock");
            }
            Self::PostgresRefusing {
                mut admin,
                database,
            } => {
                sqlx::query(&format!(
                    "ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true"
                ))
                .execute(&mut admin)
                .await
                .expect("accept connections again");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_makes_the_gateway_unready_until_it_is_back() {
    let bed = Testbed::start().expect("test bed");
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "ready-", "CZ-READY-1", 0..1).await;

    let (status, body) = get(&bed.gateway.ops_url(), "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = get(&bed.gateway.ops_url(), "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    wait_for_health(&bed, ServingStatus::Serving).await;

    let fault = Fault::induce(&bed).await;
    // A publish meets the failing store: it is refused, and the store is
    // marked unhealthy. Its answer may take the gateway's lock timeout;
    // health is watched meanwhile.
    let publisher = tokio::spawn(async move {
        let mut n = notification(
            "ready-during",
            "CZ-READY-1",
            Event::ClueShared,
            Level::Internal,
            &[],
        );
        n.summary = "during the fault".into();
        publish(&mut eeb, n).await
    });
    wait_for_health(&bed, ServingStatus::NotServing).await;
    let body = wait_for_ready(&bed, 503).await;
    assert!(body.starts_with("not ready\n"), "{body}");
    // SQLite still answers reads under the lock, but its writes fail;
    // PostgreSQL refuses the read probe's connection outright.
    let cause = match bed.backend() {
        Backend::Sqlite => "store: the last write failed",
        Backend::Postgres => "store: unreachable: ",
    };
    assert!(
        body.lines().any(|line| line.starts_with(cause)),
        "/readyz names the store ({cause}):\n{body}"
    );
    // Liveness is not readiness: the process still answers.
    let (status, _) = get(&bed.gateway.ops_url(), "/healthz").await;
    assert_eq!(status, 200);
    let text = scrape(&bed).await;
    assert_eq!(value(&text, "liandong_store_up"), Some(0.0), "{text}");
    let outcome = publisher.await.expect("the publisher task");
    assert_eq!(
        outcome
            .expect_err("no receipt while the store fails")
            .code(),
        tonic::Code::Unavailable
    );

    fault.heal().await;
    wait_for_health(&bed, ServingStatus::Serving).await;
    let body = wait_for_ready(&bed, 200).await;
    assert_eq!(body, "ready\n");
    wait_for_value(&bed, "liandong_store_up", 1.0).await;
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "ready-after-", "CZ-READY-1", 0..1).await;
}

/// The gauges read at scrape time follow the gateway now: a connected
/// agency, an open stream, a subscription's lag and an open breach count
/// are what the Operations service says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_time_gauges_say_what_the_gateway_has_now() {
    let bed = Testbed::start().expect("test bed");
    let mut psb = bed.client("cz-psb").await;
    // A subscriber that never acknowledges: everything it matches lags.
    let subscriber = liandong_tests::Subscriber::open_with(
        &mut psb,
        liandong_core::pb::SubscriptionOpen {
            name: "never-acks".into(),
            start: Some(liandong_core::pb::StartPosition {
                position: Some(liandong_core::pb::start_position::Position::Beginning(true)),
            }),
            ..Default::default()
        },
    )
    .await
    .expect("subscribe");
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "gauge-", "CZ-GAUGE-1", 0..4).await;

    let lag = r#"liandong_subscription_lag_messages{owner="cz-psb",subscription="never-acks"}"#;
    let text = wait_for_value(&bed, lag, 4.0).await;
    let expect = |series: &str, expected: f64| {
        assert_eq!(value(&text, series), Some(expected), "{series}:\n{text}");
    };
    expect(r#"liandong_agency_connections{agency="cz-eeb"}"#, 1.0);
    expect(r#"liandong_agency_connections{agency="cz-psb"}"#, 1.0);
    expect(
        r#"liandong_agency_connections{agency="cz-procuratorate"}"#,
        0.0,
    );
    expect(r#"liandong_agency_streams{agency="cz-psb"}"#, 1.0);
    expect(r#"liandong_agency_streams{agency="cz-eeb"}"#, 0.0);
    expect("liandong_breaches_open", 0.0);

    // Once the subscriber is gone, its stream is no longer counted; its
    // lag stays (a disconnected subscriber is the one to call).
    drop(subscriber);
    drop(psb);
    let text = wait_for_value(&bed, r#"liandong_agency_streams{agency="cz-psb"}"#, 0.0).await;
    assert_eq!(value(&text, lag), Some(4.0), "{text}");
}

/// A rolling upgrade: another replica already migrated the store to the
/// next version. This binary starts on it, logs the migrations it does not
/// know, stays ready (`/readyz` says so in a note) and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_migrated_by_the_next_version_is_served_and_readyz_says_so() {
    let mut bed = Testbed::start().expect("test bed");
    bed.gateway.signal(nix::sys::signal::Signal::SIGTERM);
    bed.gateway
        .wait(Duration::from_secs(30))
        .expect("the gateway stops");
    let mut conn = bed.connect_database().await;
    // What the next version's migration does: an added column, recorded.
    sqlx::query("ALTER TABLE notifications ADD COLUMN next_version_note TEXT")
        .execute(&mut conn)
        .await
        .expect("a column added");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'next version', TRUE, $2, 0)",
    )
    .bind(9_999_i64)
    .bind(vec![1_u8; 48])
    .execute(&mut conn)
    .await
    .expect("a migration of the next version recorded");
    conn.close().await.expect("close");

    bed.restart()
        .expect("an older binary starts on a store one version ahead");
    bed.wait_for_log(
        "the database holds migrations this binary does not know",
        "the start names the unknown migrations",
    )
    .await;
    assert!(bed.log().contains("9999 (next version)"), "{}", bed.log());
    let body = wait_for_ready(&bed, 200).await;
    assert_eq!(
        body,
        "ready\nnote: migrations: applied by a newer version, unknown to this binary: \
         9999 (next version); serving on it (schema changes are compatible across one \
         version): upgrade this gateway\n"
    );
    let mut eeb = bed.client("cz-eeb").await;
    let receipts = publish_clues(&mut eeb, "ahead-", "CZ-AHEAD-1", 0..2).await;
    assert_eq!(receipts.len(), 2);
}
