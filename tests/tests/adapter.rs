//! The agency adapter daemon against the real gateway, over real processes:
//! its outbox through gateway outages and its own death, its sources (drop
//! folder, local HTTP, `send`), its sinks, dead letters, `status`, and the
//! signatures it puts on what it sends.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use prost::Message;
use serde_json::{Value, json};

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::adapter_bed::{
    AdapterBed, AdapterProcess, WebhookServer, adapter_command, free_port, http,
    signing_public_key, status, wait_drained, wait_for,
};
use liandong_tests::{notification, publish};

/// The publishing agency of most tests: a county environment bureau.
const EEB: &str = "cz-eeb-xiangyuan";

const LONG: Duration = Duration::from_secs(60);

/// The JSON form of a clue (INTERNAL, region 140423), with this id (none
/// when `None`) and summary.
fn clue(id: Option<&str>, summary: &str) -> String {
    let mut value = json!({
        "case_ref": "CZ-XY-2026-HW-0042",
        "event": "EVENT_TYPE_CLUE_SHARED",
        "confidentiality": "CONFIDENTIALITY_INTERNAL",
        "region": "140423",
        "occurred_at": "2026-11-20T08:30:00Z",
        "summary": summary,
    });
    if let Some(id) = id {
        value["notification_id"] = json!(id);
    }
    value.to_string()
}

fn http_source(port: u16) -> String {
    liandong_tests::adapter_bed::http_source_config(port)
}

fn folder_source(path: &Path) -> String {
    format!(
        "\n[[source]]\nkind = \"folder\"\npath = \"{}\"\npoll_interval_ms = 50\n",
        path.display()
    )
}

fn post(port: u16, body: &str) -> (u16, Value) {
    let answer = http(port, "POST", "/v1/notifications", body);
    (answer.status, answer.body)
}

/// Writes a drop file the way agency systems must: under another name,
/// then renamed.
fn drop_file(folder: &Path, name: &str, content: &str) {
    let temporary = folder.join(format!("{name}.tmp"));
    std::fs::write(&temporary, content).unwrap();
    std::fs::rename(&temporary, folder.join(name)).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn wait_stored(bed: &AdapterBed, sender: &str, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let ids = bed.stored_ids(sender).await;
        if ids.len() >= count {
            return ids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway holds {} of {count} notifications from {sender}: {ids:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn outbox_survives_gateway_outage() {
    let mut bed = AdapterBed::new();
    bed.start_gateway();
    let port = free_port();
    let config = bed.adapter_config("eeb", EEB, &http_source(port));
    let mut adapter = AdapterProcess::start(&config, &bed.path("eeb.log"));

    assert_eq!(post(port, &clue(Some("before-outage"), "线索")).0, 202);
    assert_eq!(wait_stored(&bed, EEB, 1).await, ["before-outage"]);

    bed.stop_gateway();
    let ids: Vec<String> = (0..20).map(|i| format!("outage-{i:02}")).collect();
    for id in &ids {
        let (code, body) = post(port, &clue(Some(id), "停机期间的线索"));
        assert_eq!(code, 202, "{body}");
        assert_eq!(body["state"], "pending");
    }
    let report = wait_for("the push error is reported", LONG, || {
        let (_, report) = status(&config);
        (!report["push"]["last_error"].is_null()).then_some(report)
    });
    assert_eq!(report["outbox"]["pending"], 20);
    assert!(
        report["push"]["last_error"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", bed.port)),
        "{report}"
    );

    bed.start_gateway();
    let report = wait_drained(&config, LONG);
    assert_eq!(report["dead_letters"]["count"], 0);
    let mut expected = vec!["before-outage".to_owned()];
    expected.extend(ids);
    assert_eq!(
        bed.stored_ids(EEB).await,
        expected,
        "each stored exactly once, in the order accepted"
    );
    let stopped = adapter.stop(Signal::SIGTERM);
    assert!(
        stopped.success(),
        "SIGTERM exits 0: {stopped}; log:\n{}",
        adapter.log()
    );
}

#[tokio::test]
async fn adapter_killed_mid_push_loses_nothing() {
    let mut bed = AdapterBed::new();
    let port = free_port();
    let config = bed.adapter_config(
        "eeb",
        EEB,
        &format!("max_in_flight = 16\n{}", http_source(port)),
    );
    let log = bed.path("eeb.log");
    let mut adapter = AdapterProcess::start(&config, &log);
    // Accepted while the gateway is down, so they go out as one burst.
    let ids: Vec<String> = (0..300).map(|i| format!("burst-{i:03}")).collect();
    for id in &ids {
        assert_eq!(post(port, &clue(Some(id), "x")).0, 202);
    }
    bed.start_gateway();
    let deadline = tokio::time::Instant::now() + LONG;
    while bed.stored_ids(EEB).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the push never started"
        );
    }
    adapter.stop(Signal::SIGKILL);
    // Sampled after the death: whatever the gateway holds now, the adapter
    // sent before it died. Some but not all means the kill landed mid-push.
    let stored_after_kill = bed.stored_ids(EEB).await.len();
    assert!(
        0 < stored_after_kill && stored_after_kill < ids.len(),
        "the adapter was killed after the burst ({stored_after_kill} stored), not during it"
    );

    let mut adapter = AdapterProcess::start(&config, &log);
    let report = wait_drained(&config, LONG);
    assert_eq!(
        bed.stored_ids(EEB).await,
        ids,
        "the gateway holds each exactly once, in order (killed with {stored_after_kill} stored)"
    );
    assert_eq!(report["dead_letters"]["count"], 0, "{report}");
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[tokio::test]
async fn adapter_restarts_right_after_kill() {
    let mut bed = AdapterBed::new();
    let port = free_port();
    let config = bed.adapter_config("eeb", EEB, &http_source(port));
    let log = bed.path("eeb.log");
    let mut adapter = AdapterProcess::start(&config, &log);
    // Accepted, not yet sent: the gateway is down.
    assert_eq!(post(port, &clue(Some("before-kill"), "x")).0, 202);
    let killed_pid = adapter.pid();
    // The dead daemon stays a zombie (its /proc entry exists, its lease row
    // is fresh) while the new one starts: the lock died with it.
    let mut zombie = adapter.kill_unreaped();
    let mut adapter = AdapterProcess::start(&config, &log);
    let (_, report) = status(&config);
    assert_eq!(report["daemon"]["running"], true, "{report}");
    assert_eq!(report["daemon"]["pid"], adapter.pid(), "{report}");
    assert_ne!(adapter.pid(), killed_pid);
    assert!(
        zombie.try_wait().unwrap().is_some(),
        "the killed daemon was a zombie until now"
    );
    // A second daemon on the same state is still refused while one runs.
    let second = std::process::Command::new(liandong_tests::binary("liandong-adapter"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("LIANDONG_LOG")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(75), "{second:?}");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains(&format!("(pid {})", adapter.pid())),
        "{second:?}"
    );

    // What the killed daemon accepted goes out from the new one.
    bed.start_gateway();
    wait_drained(&config, LONG);
    assert_eq!(bed.stored_ids(EEB).await, ["before-kill"]);
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[tokio::test]
async fn bad_drop_file_rejected_with_reason() {
    let mut bed = AdapterBed::new();
    bed.start_gateway();
    let inbox = bed.path("inbox");
    let config = bed.adapter_config("eeb", EEB, &folder_source(&inbox));
    let mut adapter = AdapterProcess::start(&config, &bed.path("eeb.log"));

    let mut restricted: Value = serde_json::from_str(&clue(Some("drop-3"), "x")).unwrap();
    restricted["confidentiality"] = json!("CONFIDENTIALITY_RESTRICTED");
    drop_file(
        &inbox,
        "1-good.json",
        &clue(Some("drop-1"), "废机油倾倒线索"),
    );
    drop_file(&inbox, "2-no-summary.json", &clue(Some("drop-2"), ""));
    drop_file(&inbox, "3-no-recipients.json", &restricted.to_string());
    drop_file(&inbox, "4-not-json.json", "<notification/>");
    drop_file(
        &inbox,
        "5-unknown-event.json",
        &clue(Some("drop-5"), "x").replace("CLUE_SHARED", "CLUE"),
    );

    wait_for("every file is taken", LONG, || {
        let left: Vec<_> = names(&inbox)
            .into_iter()
            .filter(|n| n != "done" && n != "rejected")
            .collect();
        left.is_empty().then_some(())
    });
    assert_eq!(names(&inbox.join("done")), ["1-good.json"]);
    let rejected = inbox.join("rejected");
    assert_eq!(
        names(&rejected),
        [
            "2-no-summary.json",
            "2-no-summary.json.error",
            "3-no-recipients.json",
            "3-no-recipients.json.error",
            "4-not-json.json",
            "4-not-json.json.error",
            "5-unknown-event.json",
            "5-unknown-event.json.error",
        ]
    );
    let reason =
        |name: &str| std::fs::read_to_string(rejected.join(format!("{name}.error"))).unwrap();
    assert_eq!(
        reason("2-no-summary.json"),
        "2-no-summary.json: notification.summary: is required\n"
    );
    assert_eq!(
        reason("3-no-recipients.json"),
        "3-no-recipients.json: notification.recipients: are required for RESTRICTED content\n"
    );
    assert!(
        reason("4-not-json.json")
            .starts_with("4-not-json.json: invalid liandong.v1.Notification JSON"),
        "{}",
        reason("4-not-json.json")
    );
    assert!(
        reason("5-unknown-event.json").contains("EVENT_TYPE_CLUE"),
        "{}",
        reason("5-unknown-event.json")
    );
    // The agency's files are kept as written.
    assert_eq!(
        std::fs::read_to_string(rejected.join("4-not-json.json")).unwrap(),
        "<notification/>"
    );

    assert_eq!(wait_stored(&bed, EEB, 1).await, ["drop-1"]);
    let report = wait_drained(&config, LONG);
    assert_eq!(report["dead_letters"]["count"], 0);
    assert_eq!(
        bed.stored_ids(EEB).await,
        ["drop-1"],
        "nothing rejected reached the gateway"
    );
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[tokio::test]
async fn half_written_drop_file_not_read() {
    let mut bed = AdapterBed::new();
    bed.start_gateway();
    let inbox = bed.path("inbox");
    let config = bed.adapter_config("eeb", EEB, &folder_source(&inbox));
    let mut adapter = AdapterProcess::start(&config, &bed.path("eeb.log"));

    let full = clue(Some("late-1"), "写了一半的文件");
    let half = &full[..full.len() / 2];
    for name in ["late.json.tmp", ".late.json", "late.json.part"] {
        std::fs::write(inbox.join(name), half).unwrap();
    }
    // A complete file written after them: once it is taken, the folder has
    // been scanned with the half-written ones in it.
    drop_file(&inbox, "marker.json", &clue(Some("marker-1"), "x"));
    wait_for("the marker is taken", LONG, || {
        names(&inbox.join("done"))
            .contains(&"marker.json".to_owned())
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        names(&inbox),
        [
            ".late.json",
            "done",
            "late.json.part",
            "late.json.tmp",
            "rejected"
        ]
    );
    assert!(names(&inbox.join("rejected")).is_empty());
    assert_eq!(
        std::fs::read_to_string(inbox.join("late.json.tmp")).unwrap(),
        half
    );

    // Finished and renamed: now it is read.
    std::fs::write(inbox.join("late.json.tmp"), &full).unwrap();
    std::fs::rename(inbox.join("late.json.tmp"), inbox.join("late.json")).unwrap();
    wait_for("the completed file is taken", LONG, || {
        names(&inbox.join("done"))
            .contains(&"late.json".to_owned())
            .then_some(())
    });
    assert_eq!(wait_stored(&bed, EEB, 2).await, ["marker-1", "late-1"]);
    assert!(names(&inbox.join("rejected")).is_empty());
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[tokio::test]
async fn http_source_idempotent() {
    let mut bed = AdapterBed::new();
    bed.start_gateway();
    let port = free_port();
    let config = bed.adapter_config("eeb", EEB, &http_source(port));
    let mut adapter = AdapterProcess::start(&config, &bed.path("eeb.log"));

    let (code, first) = post(port, &clue(Some("idem-1"), "线索"));
    assert_eq!(code, 202);
    assert_eq!(first["status"], "accepted");
    assert_eq!(first["notification_id"], "idem-1");
    assert_eq!(first["duplicate"], false);
    let (code, again) = post(port, &clue(Some("idem-1"), "线索"));
    assert_eq!(code, 202);
    assert_eq!(again["local_id"], first["local_id"]);
    assert_eq!(again["duplicate"], true);

    let (code, conflict) = post(port, &clue(Some("idem-1"), "另一个内容"));
    assert_eq!(code, 409);
    assert_eq!(conflict["error"]["code"], "conflict");
    assert_eq!(conflict["error"]["field"], "notification.notification_id");

    let (code, invalid) = post(port, &clue(Some("idem-2"), "x").replace("140423", "1404"));
    assert_eq!(code, 400);
    assert_eq!(invalid["error"]["field"], "notification.region");

    let (code, assigned) = post(port, &clue(None, "无编号"));
    assert_eq!(code, 202);
    let assigned_id = assigned["notification_id"].as_str().unwrap().to_owned();
    assert!(
        assigned_id.starts_with("cz-eeb-xiangyuan-"),
        "{assigned_id}"
    );

    wait_drained(&config, LONG);
    // Sent: still idempotent, and its receipt is visible.
    let (code, after) = post(port, &clue(Some("idem-1"), "线索"));
    assert_eq!(
        (code, after["duplicate"].clone(), after["state"].clone()),
        (202, json!(true), json!("sent"))
    );
    let state = http(port, "GET", "/v1/notifications/idem-1", "");
    assert_eq!(state.status, 200);
    assert_eq!(state.body["state"], "sent");

    let stored = bed.stored(EEB).await;
    let ids: Vec<_> = stored.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(ids, ["idem-1".to_owned(), assigned_id]);
    assert_eq!(state.body["sequence"], stored[0].1);

    // What the gateway holds carries the agency's signature over the
    // documented bytes.
    let public = signing_public_key(&bed.pki, EEB);
    for (_, _, payload) in &stored {
        let n = pb::Notification::decode(payload.as_slice()).unwrap();
        liandong_core::signing::verify(&n, EEB, &public).unwrap();
    }
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[tokio::test]
async fn send_hands_over_to_the_daemon_or_publishes_directly() {
    let mut bed = AdapterBed::new();
    bed.start_gateway();
    let port = free_port();
    let config = bed.adapter_config("eeb", EEB, &http_source(port));
    let config_arg = config.to_str().unwrap();
    let mut adapter = AdapterProcess::start(&config, &bed.path("eeb.log"));

    let output = adapter_command(
        &["--config", config_arg, "send"],
        Some(&clue(Some("send-1"), "x")),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (answer["status"].clone(), answer["notification_id"].clone()),
        (json!("accepted"), json!("send-1"))
    );

    let output = adapter_command(
        &["--config", config_arg, "send"],
        Some(&clue(Some("send-2"), "")),
    );
    assert_eq!(output.status.code(), Some(65));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "refused by the adapter daemon: notification.summary: is required"
    );
    wait_drained(&config, LONG);
    assert!(adapter.stop(Signal::SIGTERM).success());

    // No daemon: published directly, signed all the same.
    let output = adapter_command(
        &["--config", config_arg, "send"],
        Some(&clue(Some("send-3"), "x")),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let receipt: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(receipt["notification_id"], "send-3");
    let stored = bed.stored(EEB).await;
    assert_eq!(
        stored
            .iter()
            .map(|(id, _, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["send-1", "send-3"]
    );
    let direct = pb::Notification::decode(stored[1].2.as_slice()).unwrap();
    liandong_core::signing::verify(&direct, EEB, &signing_public_key(&bed.pki, EEB)).unwrap();
}

#[tokio::test]
async fn webhook_failure_means_no_ack_and_redelivery() {
    const PSB: &str = "cz-psb-xiangyuan";
    let mut bed = AdapterBed::new();
    bed.start_gateway();
    let mut publisher = bed.client(EEB).await;
    let first = publish(
        &mut publisher,
        notification("hook-1", "CZ-XY-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();

    let webhook = WebhookServer::start(503);
    let config = bed.adapter_config(
        "psb",
        PSB,
        &format!(
            "\n[[subscription]]\nname = \"xy-psb-inbox\"\nstart = \"beginning\"\n\
             sink = {{ kind = \"webhook\", url = \"{}\", retry_initial_ms = 50, retry_max_ms = 200 }}\n",
            webhook.url
        ),
    );
    let log = bed.path("psb.log");
    let mut adapter = AdapterProcess::start(&config, &log);
    wait_for("the webhook is tried again and again", LONG, || {
        (webhook.hooks().len() >= 3).then_some(())
    });
    assert!(
        webhook
            .hooks()
            .iter()
            .all(|h| h.body["delivery"]["notification"]["notification_id"] == "hook-1")
    );
    assert_eq!(
        bed.acked_through(PSB, "xy-psb-inbox").await,
        0,
        "nothing acknowledged"
    );
    let (code, report) = status(&config);
    assert_eq!(
        report["subscriptions"][0]["last_acked_sequence"],
        Value::Null
    );
    assert_eq!(
        report["subscriptions"][0]["last_error"],
        "webhook answered 503"
    );
    assert_eq!(
        code, 0,
        "failing for less than status.max_failure_seconds: {report}"
    );

    // Killed while failing; the agency system comes back.
    adapter.stop(Signal::SIGKILL);
    webhook.answer(200);
    let mut adapter = AdapterProcess::start(&config, &log);
    let deadline = tokio::time::Instant::now() + LONG;
    while bed.acked_through(PSB, "xy-psb-inbox").await < first.sequence as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never acknowledged after a 2xx"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken = |id: &str| {
        webhook
            .hooks()
            .iter()
            .filter(|h| {
                h.answered == 200 && h.body["delivery"]["notification"]["notification_id"] == id
            })
            .count()
    };
    assert_eq!(
        taken("hook-1"),
        1,
        "redelivered after the restart, taken once"
    );
    let hook = webhook
        .hooks()
        .into_iter()
        .find(|h| h.answered == 200)
        .unwrap();
    assert_eq!(hook.body["kind"], "delivery");
    assert_eq!(hook.body["subscription"], "xy-psb-inbox");
    assert_eq!(hook.body["delivery"]["sequence"], first.sequence);
    assert_eq!(hook.body["delivery"]["sender"], EEB);

    // Later deliveries flow; the first is not handed again.
    publish(
        &mut publisher,
        notification("hook-2", "CZ-XY-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    wait_for("hook-2 is taken", LONG, || {
        (taken("hook-2") == 1).then_some(())
    });
    assert_eq!(taken("hook-1"), 1);
    let (code, report) = status(&config);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["subscriptions"][0]["failing_since"], Value::Null);
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[tokio::test]
async fn outbox_full_refuses_clearly() {
    let mut bed = AdapterBed::new();
    let port = free_port();
    let inbox = bed.path("inbox");
    let config = bed.adapter_config(
        "eeb",
        EEB,
        &format!(
            "max_pending = 3\n{}{}",
            http_source(port),
            folder_source(&inbox)
        ),
    );
    let config_arg = config.to_str().unwrap();
    let mut adapter = AdapterProcess::start(&config, &bed.path("eeb.log"));
    for i in 1..=3 {
        assert_eq!(post(port, &clue(Some(&format!("full-{i}")), "x")).0, 202);
    }
    let answer = http(
        port,
        "POST",
        "/v1/notifications",
        &clue(Some("full-4"), "x"),
    );
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert_eq!(answer.body["error"]["code"], "outbox_full");
    assert_eq!(
        answer.body["error"]["message"],
        "outbox full: 3 notifications are waiting for the gateway (outbox.max_pending = 3); \
         nothing was accepted, retry later"
    );
    let output = adapter_command(
        &["--config", config_arg, "send"],
        Some(&clue(Some("full-5"), "x")),
    );
    assert_eq!(output.status.code(), Some(75));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("outbox full"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop_file(&inbox, "waiting.json", &clue(Some("full-file"), "x"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        names(&inbox).contains(&"waiting.json".to_owned()),
        "left in place"
    );
    assert!(names(&inbox.join("rejected")).is_empty());
    let (code, report) = status(&config);
    assert_eq!(code, 2, "unhealthy: {report}");
    assert_eq!(report["outbox"]["pending"], 3);
    assert!(
        report["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("outbox full: 3 pending"),
        "{report}"
    );

    bed.start_gateway();
    assert_eq!(
        wait_stored(&bed, EEB, 4).await,
        ["full-1", "full-2", "full-3", "full-file"],
        "refused ones were never accepted; the waiting file went in once there was room"
    );
    assert!(names(&inbox.join("done")).contains(&"waiting.json".to_owned()));
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[tokio::test]
async fn permanent_refusal_goes_to_dead_letter() {
    let mut bed = AdapterBed::new();
    bed.start_gateway();
    // The id the agency system will reuse was published before, otherwise.
    let mut direct = bed.client(EEB).await;
    publish(
        &mut direct,
        notification(
            "reused-1",
            "CZ-XY-1",
            Event::ClueShared,
            Level::Internal,
            &[],
        ),
    )
    .await
    .unwrap();

    let port = free_port();
    let dead = bed.path("dead-letters");
    let config = bed.adapter_config(
        "eeb",
        EEB,
        &format!(
            "{}\n[dead_letter]\nsink = {{ kind = \"folder\", path = \"{}\" }}\n",
            http_source(port),
            dead.display()
        ),
    );
    let mut adapter = AdapterProcess::start(&config, &bed.path("eeb.log"));
    let mut unknown_recipient: Value = serde_json::from_str(&clue(Some("nobody-1"), "x")).unwrap();
    unknown_recipient["confidentiality"] = json!("CONFIDENTIALITY_RESTRICTED");
    unknown_recipient["recipients"] = json!(["cz-nobody"]);
    unknown_recipient["confidentiality_note"] = json!("侦查阶段");
    for body in [
        clue(Some("ok-1"), "x"),
        clue(Some("reused-1"), "other content under a used id"),
        unknown_recipient.to_string(),
        clue(Some("ok-2"), "x"),
    ] {
        assert_eq!(
            post(port, &body).0,
            202,
            "accepted locally: the gateway decides"
        );
    }
    wait_drained(&config, LONG);
    assert_eq!(bed.stored_ids(EEB).await, ["reused-1", "ok-1", "ok-2"]);

    let (code, report) = status(&config);
    assert_eq!(code, 2, "dead letters make it unhealthy: {report}");
    assert_eq!(report["dead_letters"]["count"], 2);
    let mut dead_letters: Vec<(String, String, String)> = report["dead_letters"]["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["notification_id"].as_str().unwrap().to_owned(),
                d["code"].as_str().unwrap().to_owned(),
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    dead_letters.sort();
    assert_eq!(dead_letters[0].0, "nobody-1");
    assert_eq!(dead_letters[0].1, "INVALID_ARGUMENT");
    assert!(
        dead_letters[0].2.starts_with("notification.recipients[0]"),
        "{dead_letters:?}"
    );
    assert_eq!(
        (dead_letters[1].0.as_str(), dead_letters[1].1.as_str()),
        ("reused-1", "FAILED_PRECONDITION")
    );
    assert!(
        report["problems"].to_string().contains("2 dead letters"),
        "{report}"
    );

    let state = http(port, "GET", "/v1/notifications/nobody-1", "");
    assert_eq!(state.body["state"], "dead_letter");
    assert_eq!(state.body["code"], "INVALID_ARGUMENT");

    // The agency system is told through the dead-letter sink.
    let files = wait_for("both dead letters are reported", LONG, || {
        let files = names(&dead);
        (files.len() == 2).then_some(files)
    });
    let mut reported: Vec<String> = files
        .iter()
        .map(|f| {
            let body: Value =
                serde_json::from_slice(&std::fs::read(dead.join(f)).unwrap()).unwrap();
            assert_eq!(body["kind"], "dead_letter");
            format!(
                "{} {}",
                body["dead_letter"]["notification_id"].as_str().unwrap(),
                body["dead_letter"]["code"].as_str().unwrap()
            )
        })
        .collect();
    reported.sort();
    assert_eq!(
        reported,
        ["nobody-1 INVALID_ARGUMENT", "reused-1 FAILED_PRECONDITION"]
    );
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[test]
fn broken_daemon_config_exits_64_with_one_line() {
    let bed = AdapterBed::new();
    let config = bed.adapter_config(
        "eeb",
        EEB,
        "\n[[source]]\nkind = \"http\"\nlisten = \"0.0.0.0:7601\"\n",
    );
    let output = adapter_command(&["--config", config.to_str().unwrap(), "run"], None);
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{}: `source[0].listen`: 0.0.0.0:7601 is not a loopback address",
            config.display()
        )),
        "{stderr}"
    );
    let output = adapter_command(&["run"], None);
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--config"));
}
