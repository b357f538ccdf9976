//! An agency an operator disables keeps everything its adapter queued: the
//! real `liandong-adapter run` daemon for cz-eeb, with notifications on
//! their way when an operator (cz-ops, over the Operations service)
//! disables cz-eeb, keeps them and what it accepts afterwards in its
//! outbox — none stored by the gateway, none dead-lettered — and, once
//! the operator enables cz-eeb again, delivers them all, in order, to a
//! subscriber; its own subscription reopens as well. And the gateway's
//! part of it: the endings a disabled agency's streams get are marked
//! `liandong-refusal: agency-disabled`, other refusals are not. On either
//! backend.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

use liandong_core::pb;
use liandong_core::pb::operations_client::OperationsClient;
use liandong_core::refusal::is_agency_disabled;
use liandong_tests::adapter_bed::{
    AdapterBed, AdapterProcess, free_port, http, http_source_config, status, wait_drained, wait_for,
};
use liandong_tests::{Subscriber, Testbed, notification, publish};

const EEB: &str = "cz-eeb";

const LONG: Duration = Duration::from_secs(60);

const REASON: &str = "adapter under security review";

/// The JSON form of an INTERNAL clue of cz-eeb's own region.
fn clue(id: &str) -> String {
    json!({
        "notification_id": id,
        "case_ref": "CZ-DIS-2026-0001",
        "event": "EVENT_TYPE_CLUE_SHARED",
        "confidentiality": "CONFIDENTIALITY_INTERNAL",
        "region": "140400",
        "occurred_at": "2026-11-20T08:30:00Z",
        "summary": "停用期间的线索",
    })
    .to_string()
}

/// Hands `id` to the adapter's HTTP source; it must be accepted.
fn hand_over(port: u16, id: &str) {
    let answer = http(port, "POST", "/v1/notifications", &clue(id));
    assert_eq!(answer.status, 202, "{id}: {}", answer.body);
}

async fn operations(bed: &AdapterBed) -> OperationsClient<Channel> {
    let channel = bed
        .pki
        .credentials("cz-ops")
        .connect(&bed.gateway_url(), None)
        .await
        .expect("connect to the gateway as cz-ops");
    OperationsClient::new(channel)
}

/// The files the adapter's folder sink holds.
fn delivered_files(folder: &Path) -> usize {
    std::fs::read_dir(folder).map_or(0, |entries| entries.count())
}

fn report_of(config: &Path) -> Value {
    status(config).1
}

#[tokio::test]
async fn a_disabled_agencys_adapter_keeps_its_notifications_until_enabled() {
    let mut bed = AdapterBed::new();
    // cz-eeb's publishing is paced (4 a second, one at a time), so its
    // adapter's stream holds notifications awaiting their receipts when the
    // operator disables it: those are the ones a permanent refusal would
    // have dead-lettered.
    let gateway_config = bed.path("gateway.toml");
    let mut text = std::fs::read_to_string(&gateway_config).unwrap();
    text.push_str("\n[limits.agency.cz-eeb]\npublish_per_second = 4\npublish_burst = 1\n");
    std::fs::write(&gateway_config, text).unwrap();
    bed.start_gateway();
    let mut ops = operations(&bed).await;
    let mut psb = bed.client("cz-psb").await;
    let mut subscriber = Subscriber::open(&mut psb, "psb-inbox").await.unwrap();

    let port = free_port();
    let inbox = bed.path("eeb-inbox");
    let config = bed.adapter_config(
        "eeb",
        EEB,
        &format!(
            "{}\n[[subscription]]\nname = \"eeb-inbox\"\nstart = \"beginning\"\n\
             sink = {{ kind = \"folder\", path = \"{}\" }}\n",
            http_source_config(port),
            inbox.display()
        ),
    );
    let log = bed.path("eeb.log");
    let mut adapter = AdapterProcess::start(&config, &log);

    let queued: Vec<String> = (0..12).map(|i| format!("queued-{i:02}")).collect();
    for id in &queued {
        hand_over(port, id);
    }
    let deadline = tokio::time::Instant::now() + LONG;
    while bed.stored_ids(EEB).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the adapter never published; log:\n{}",
            adapter.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let state = ops
        .disable_agency(pb::DisableAgencyRequest {
            agency: EEB.into(),
            reason: REASON.into(),
        })
        .await
        .expect("cz-ops disables cz-eeb")
        .into_inner();
    assert!(state.disabled && state.changed, "{state:?}");
    let late: Vec<String> = (0..3).map(|i| format!("late-{i}")).collect();
    for id in &late {
        hand_over(port, id);
    }

    // The adapter saw the refusal as what it is, and keeps trying through
    // the connections the gateway closes after the handshake.
    wait_for(
        "the adapter warns that its agency is disabled",
        LONG,
        || {
            adapter
                .log()
                .contains(&format!(
                    "the gateway's operators have disabled this agency: {REASON}"
                ))
                .then_some(())
        },
    );
    let stored_while_enabled = bed.stored_ids(EEB).await;
    assert!(
        stored_while_enabled.len() < queued.len(),
        "the pacing left notifications on their way: {stored_while_enabled:?}"
    );
    let retries = |log: &str| log.matches("cannot push to the gateway; retrying").count();
    let before = retries(&adapter.log());
    wait_for("the pusher retries while disabled", LONG, || {
        (retries(&adapter.log()) >= before + 3).then_some(())
    });
    let waiting = queued.len() + late.len() - stored_while_enabled.len();
    let report = report_of(&config);
    assert_eq!(report["dead_letters"]["count"], 0, "{report}");
    assert_eq!(report["outbox"]["pending"], waiting, "{report}");
    assert_eq!(
        bed.stored_ids(EEB).await,
        stored_while_enabled,
        "nothing of a disabled agency is stored"
    );
    assert!(
        !adapter.log().contains("moved to the dead letters"),
        "{}",
        adapter.log()
    );
    for _ in &stored_while_enabled {
        let delivery = subscriber
            .expect_delivery(LONG, "what was stored before the disable")
            .await;
        subscriber.ack(&[delivery.sequence]).await;
    }
    subscriber
        .expect_silence(
            Duration::from_millis(500),
            "nothing more while cz-eeb is disabled",
        )
        .await;

    let state = ops
        .enable_agency(pb::EnableAgencyRequest {
            agency: EEB.into(),
            reason: "review passed".into(),
        })
        .await
        .expect("cz-ops enables cz-eeb")
        .into_inner();
    assert!(!state.disabled && state.changed, "{state:?}");

    let report = wait_drained(&config, LONG);
    assert_eq!(report["dead_letters"]["count"], 0, "{report}");
    let mut everything = queued.clone();
    everything.extend(late.iter().cloned());
    assert_eq!(
        bed.stored_ids(EEB).await,
        everything,
        "each stored exactly once, in the order accepted"
    );
    let mut arrived = Vec::new();
    while arrived.len() < waiting {
        let delivery = subscriber
            .expect_delivery(LONG, "the notifications kept while disabled")
            .await;
        subscriber.ack(&[delivery.sequence]).await;
        arrived.push(delivery.notification.unwrap().notification_id);
    }
    assert_eq!(arrived, everything[stored_while_enabled.len()..]);
    // The adapter's own subscription, ended by the disable, reopened.
    wait_for("the adapter's subscription has everything", LONG, || {
        (delivered_files(&inbox) == everything.len()).then_some(())
    });
    let stopped = adapter.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(stopped.success(), "{stopped}; log:\n{}", adapter.log());
}

#[tokio::test]
async fn the_gateway_marks_a_disabled_agencys_stream_endings_and_nothing_else() {
    let bed = Testbed::start().unwrap();
    let channel = bed
        .pki
        .credentials("cz-ops")
        .connect(&bed.gateway.url(), None)
        .await
        .expect("connect as cz-ops");
    let mut ops = OperationsClient::new(channel);
    let clue = |id: &str| {
        notification(
            id,
            "CZ-DIS-2",
            pb::EventType::ClueShared,
            pb::Confidentiality::Internal,
            &[],
        )
    };

    // An ordinary PERMISSION_DENIED (the press office may publish no clue)
    // carries no marker: it is the notification's, for good.
    let mut press = bed.client("cz-press-office").await;
    let refused = publish(&mut press, clue("press-1")).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(!is_agency_disabled(&refused), "{refused:?}");

    let mut eeb = bed.client("cz-eeb").await;
    let mut subscriber = Subscriber::open(&mut eeb, "eeb-main").await.unwrap();
    let (requests, rx) = mpsc::channel(4);
    let mut receipts = eeb
        .publish_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(pb::PublishRequest {
            notification: Some(clue("eeb-1")),
        })
        .await
        .unwrap();
    receipts.message().await.unwrap().expect("a receipt");

    ops.disable_agency(pb::DisableAgencyRequest {
        agency: "cz-eeb".into(),
        reason: REASON.into(),
    })
    .await
    .expect("cz-ops disables cz-eeb");

    let ended = loop {
        match subscriber.next_event(Duration::from_secs(5)).await {
            // eeb-1, its own; left unacknowledged, it comes again later.
            liandong_tests::Next::Delivery(_) => continue,
            liandong_tests::Next::Failed(status) => break status,
            other => panic!("the subscription did not fail: {other}"),
        }
    };
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    assert!(is_agency_disabled(&ended), "{ended:?}");
    assert_eq!(
        ended.message(),
        format!("agency cz-eeb is disabled by an operator: {REASON}")
    );
    let _ = requests
        .send(pb::PublishRequest {
            notification: Some(clue("eeb-2")),
        })
        .await;
    let ended = receipts.message().await.unwrap_err();
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    assert!(is_agency_disabled(&ended), "{ended:?}");
}
