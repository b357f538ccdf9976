//! Behaviour that is about processes: signals, crashes, restarts, start-up
//! refusals, and what the gateway serves besides the Exchange.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sqlx::Connection;

use liandong_core::pb::{Confidentiality as Level, EventType as Event};
use liandong_tests::{Testbed, binary, notification, publish};

/// How one publish of [`publish_through_signal`] ended.
#[derive(Debug)]
enum Outcome {
    /// A receipt with this sequence.
    Receipt(u64),
    /// `UNAVAILABLE`: refused, nothing stored (checked).
    Refused(String),
    /// Anything else: the outcome is unknown until republished.
    Unknown(tonic::Status),
}

/// One publish: its id, when it was sent and answered, and how it ended.
#[derive(Debug)]
struct Attempt {
    id: String,
    sent: Instant,
    answered: Instant,
    outcome: Outcome,
}

/// Publishers with unique ids publish until one of their calls fails;
/// `signal` is sent once `receipts_before` receipts were given. Returns
/// every attempt and the instants just before and just after the signal.
async fn publish_through_signal(
    bed: &Testbed,
    receipts_before: usize,
    signal: impl FnOnce(),
) -> (Vec<Attempt>, Instant, Instant) {
    let receipts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let mut client = bed.client("cz-eeb").await;
        let receipts = receipts.clone();
        tasks.push(tokio::spawn(async move {
            let mut attempts = Vec::new();
            for i in 0.. {
                let id = format!("w{worker}-{i}");
                let n = notification(&id, "C-BURST", Event::ClueShared, Level::Internal, &[]);
                let sent = Instant::now();
                let result = publish(&mut client, n).await;
                let answered = Instant::now();
                let outcome = match result {
                    Ok(receipt) => {
                        receipts.fetch_add(1, Ordering::Relaxed);
                        Outcome::Receipt(receipt.sequence)
                    }
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        Outcome::Refused(status.message().to_owned())
                    }
                    Err(status) => Outcome::Unknown(status),
                };
                let last = !matches!(outcome, Outcome::Receipt(_));
                attempts.push(Attempt {
                    id,
                    sent,
                    answered,
                    outcome,
                });
                if last {
                    return attempts;
                }
            }
            unreachable!()
        }));
    }
    let limit = Instant::now() + Duration::from_secs(60);
    while receipts.load(Ordering::Relaxed) < receipts_before {
        assert!(Instant::now() < limit, "the publishers never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = Instant::now();
    signal();
    let after = Instant::now();
    let mut attempts = Vec::new();
    for task in tasks {
        attempts.extend(
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("every publisher gets an answer")
                .unwrap(),
        );
    }
    (attempts, before, after)
}

/// The gateway's database, whichever the backend.
async fn database(bed: &Testbed) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&bed.database_url())
        .await
        .expect("open the gateway's database")
}

/// Every stored `(notification_id, sequence)` of cz-eeb.
async fn stored_of_eeb(conn: &mut sqlx::AnyConnection) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT notification_id, sequence FROM notifications WHERE sender = $1")
        .bind("cz-eeb")
        .fetch_all(conn)
        .await
        .expect("read the notifications")
}

#[tokio::test]
async fn sigterm_completes_or_refuses_every_inflight_publish() {
    let mut bed = Testbed::start().unwrap();
    let gateway = &bed.gateway;
    let (attempts, before, after) =
        publish_through_signal(&bed, 100, || gateway.signal(Signal::SIGTERM)).await;
    let status = bed.gateway.wait(Duration::from_secs(15)).unwrap();
    assert!(
        status.success(),
        "SIGTERM must end the gateway with exit 0, got {status}"
    );
    assert!(bed.log().contains("SIGTERM received") && bed.log().contains("stopped"));

    // Publishes were in flight when the signal landed: sent before it,
    // answered after it.
    let in_flight: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.sent < before && a.answered > after)
        .collect();
    assert!(
        !in_flight.is_empty(),
        "no publish was in flight when SIGTERM landed"
    );
    let completed = in_flight
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Receipt(_)))
        .count();
    let refusals: Vec<&str> = attempts
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::Refused(message) => Some(message.as_str()),
            _ => None,
        })
        .collect();
    eprintln!(
        "{} publishes, {} in flight at the signal ({completed} completed with a receipt); refusals: {refusals:?}",
        attempts.len(),
        in_flight.len()
    );

    // Every receipt is stored under its sequence; nothing refused is.
    let mut conn = database(&bed).await;
    let stored: HashMap<String, i64> = stored_of_eeb(&mut conn).await.into_iter().collect();
    let mut unresolved = Vec::new();
    for attempt in &attempts {
        match &attempt.outcome {
            Outcome::Receipt(sequence) => assert_eq!(
                stored.get(&attempt.id),
                Some(&(*sequence as i64)),
                "acknowledged {} lost or moved",
                attempt.id
            ),
            Outcome::Refused(message) => {
                assert!(
                    !stored.contains_key(&attempt.id),
                    "{} was refused with UNAVAILABLE ({message}) but stored",
                    attempt.id
                );
                unresolved.push(attempt);
            }
            Outcome::Unknown(status) => {
                eprintln!("{}: outcome unknown ({status:?})", attempt.id);
                unresolved.push(attempt);
            }
        }
    }
    assert_eq!(
        unresolved.len(),
        8,
        "each publisher ends with exactly one publish without a receipt"
    );
    drop(conn);

    // After a restart, republishing resolves every publish without a
    // receipt; a receipted one is answered with its original receipt.
    bed.restart().unwrap();
    let mut client = bed.client("cz-eeb").await;
    for attempt in &unresolved {
        let receipt = publish(
            &mut client,
            notification(
                &attempt.id,
                "C-BURST",
                Event::ClueShared,
                Level::Internal,
                &[],
            ),
        )
        .await
        .unwrap();
        if matches!(attempt.outcome, Outcome::Refused(_)) {
            assert!(!receipt.duplicate, "{} was refused, yet stored", attempt.id);
        }
    }
    let (id, sequence) = attempts
        .iter()
        .find_map(|a| match a.outcome {
            Outcome::Receipt(sequence) => Some((&a.id, sequence)),
            _ => None,
        })
        .unwrap();
    let again = publish(
        &mut client,
        notification(id, "C-BURST", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.sequence, sequence);

    // Each publish is stored exactly once.
    let mut conn = database(&bed).await;
    let stored = stored_of_eeb(&mut conn).await;
    let mut ids: Vec<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = attempts.iter().map(|a| a.id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "every publish stored exactly once");
}

#[tokio::test]
async fn killed_gateway_keeps_every_acknowledged_publish() {
    let mut bed = Testbed::start().unwrap();
    let gateway = &bed.gateway;
    let (attempts, _, _) =
        publish_through_signal(&bed, 100, || gateway.signal(Signal::SIGKILL)).await;
    bed.gateway.wait(Duration::from_secs(10)).unwrap();

    // Every receipt is stored under its sequence.
    let mut conn = database(&bed).await;
    let stored: HashMap<String, i64> = stored_of_eeb(&mut conn).await.into_iter().collect();
    for attempt in &attempts {
        if let Outcome::Receipt(sequence) = attempt.outcome {
            assert_eq!(
                stored.get(&attempt.id),
                Some(&(sequence as i64)),
                "acknowledged {} lost or moved",
                attempt.id
            );
        }
    }
    drop(conn);

    // A kill leaves the last publish of each publisher unknown, whatever
    // its status says: republishing after a restart resolves each.
    bed.restart().unwrap();
    let mut client = bed.client("cz-eeb").await;
    for attempt in &attempts {
        if !matches!(attempt.outcome, Outcome::Receipt(_)) {
            publish(
                &mut client,
                notification(
                    &attempt.id,
                    "C-BURST",
                    Event::ClueShared,
                    Level::Internal,
                    &[],
                ),
            )
            .await
            .unwrap();
        }
    }
    let mut conn = database(&bed).await;
    let mut ids: Vec<String> = stored_of_eeb(&mut conn)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<String> = attempts.iter().map(|a| a.id.clone()).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "every publish stored exactly once");
}

#[tokio::test]
async fn subscription_stream_ends_cleanly_on_sigterm_and_resumes_after_restart() {
    let mut bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish(
        &mut eeb,
        notification("a", "C-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    let mut police = bed.client("cz-psb").await;
    let mut sub = liandong_tests::Subscriber::open(&mut police, "inbox")
        .await
        .unwrap();
    sub.take_acked(1, Duration::from_secs(10)).await;
    // Acks travel asynchronously: wait until this one is persisted.
    let mut conn = database(&bed).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let cursor: i64 =
            sqlx::query_scalar("SELECT acked_through FROM subscriptions WHERE owner = 'cz-psb'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if cursor == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ack was never persisted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bed.gateway.signal(Signal::SIGTERM);
    let ended = sub.next(Duration::from_secs(10)).await;
    assert!(
        matches!(ended, Err(ref s) if s.code() == tonic::Code::Unavailable),
        "{ended:?}"
    );
    assert!(bed.gateway.wait(Duration::from_secs(15)).unwrap().success());
    bed.restart().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish(
        &mut eeb,
        notification("b", "C-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    let mut police = bed.client("cz-psb").await;
    let mut sub = liandong_tests::Subscriber::open(&mut police, "inbox")
        .await
        .unwrap();
    let next = sub.take_acked(1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(
        next.notification.unwrap().notification_id,
        "b",
        "resumes after the acknowledged one"
    );
}

#[tokio::test]
async fn health_and_reflection_are_served_behind_mutual_tls() {
    let bed = Testbed::start().unwrap();
    let channel = bed
        .pki
        .credentials("cz-ops")
        .connect(&bed.gateway.url(), None)
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "liandong.v1.Exchange".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"liandong.v1.Exchange".to_owned()),
        "{names:?}"
    );

    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    let mut alpha = AlphaClient::new(channel);
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "liandong.v1.Notification".into(),
        )),
    };
    let mut replies = alpha
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    assert!(matches!(
        reply.message_response,
        Some(tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}

#[test]
fn broken_config_exits_64_with_one_line_naming_the_problem() {
    let bed_dir = tempfile::tempdir().unwrap();
    let config = bed_dir.path().join("gateway.toml");
    std::fs::write(&config, "listen = \"nowhere\"\nregistry = \"r.toml\"\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n[database]\nurl=\"sqlite://x.db\"\n[signing]\nkey=\"k.pk8\"\n").unwrap();
    let out = Command::new(binary("liandong-gateway"))
        .args(["serve", "--config"])
        .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("gateway.toml: listen:"), "{stderr}");

    // A registry error names the file, the entry and the field.
    std::fs::write(bed_dir.path().join("r.toml"), "[[agency]]\nid = \"cz-x\"\nname = \"x\"\nrole = \"POLICE\"\nregion = \"14\"\nclearance = \"PUBLIC\"\n").unwrap();
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nregistry = \"r.toml\"\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n[database]\nurl=\"sqlite://x.db\"\n[signing]\nkey=\"k.pk8\"\n").unwrap();
    let out = Command::new(binary("liandong-gateway"))
        .args(["serve", "--config"])
        .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("r.toml: agency[0] (cz-x): region:"),
        "{stderr}"
    );
    assert!(
        !bed_dir.path().join("x.db").exists(),
        "nothing is created when the config is refused"
    );

    // An unreadable signing key names the config key and the file.
    std::fs::write(bed_dir.path().join("r.toml"), "[[agency]]\nid = \"cz-x\"\nname = \"x\"\nrole = \"POLICE\"\nregion = \"140400\"\nclearance = \"PUBLIC\"\n").unwrap();
    let out = Command::new(binary("liandong-gateway"))
        .args(["serve", "--config"])
        .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("signing.key: ")
            && stderr.contains("k.pk8: cannot read the gateway's signing key"),
        "{stderr}"
    );
    assert!(!bed_dir.path().join("x.db").exists());
}

/// SIGTERM the moment the gateway says it is listening (what a supervisor
/// may do at once) is a graceful stop: the signal is watched before that
/// line is printed, never left to the default action that kills.
#[tokio::test]
async fn sigterm_as_soon_as_listening_stops_gracefully() {
    for _ in 0..3 {
        let mut bed = Testbed::start().unwrap();
        bed.gateway.signal(Signal::SIGTERM);
        let status = bed.gateway.wait(Duration::from_secs(15)).unwrap();
        assert!(
            status.success(),
            "SIGTERM right after start must end the gateway with exit 0, got {status}"
        );
        assert!(bed.log().contains("SIGTERM received"), "{}", bed.log());
    }
}
