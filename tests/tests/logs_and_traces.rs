//! The gateway's logs and traces, read as an operator's tools read them:
//! its standard error in a file (JSON lines or pretty lines, never colour
//! codes), and its spans as an OpenTelemetry collector receives them over
//! OTLP/HTTP.
//!
//! The tests run on a multi-threaded runtime: stopping the gateway is a
//! blocking wait, during which the client's connection and the receiver
//! must go on answering.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{GatewayProcess, Testbed, binary, notification, publish};

const WAIT: Duration = Duration::from_secs(20);
const PUBLISH_RPC: &str = "/liandong.v1.Exchange/Publish";
/// The caller's trace, continued by the gateway's span.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
/// The summary of the notification published; content never logged.
const SECRET: &str = "summary of logs-1";

/// Stops the bed's gateway and starts it again on the same config with
/// `args` and `env`, its standard error in `log` (in the bed's directory).
fn relaunch(bed: &mut Testbed, log: &str, args: &[&str], env: &[(&str, Option<&str>)]) -> PathBuf {
    // Just started, it may not watch SIGTERM yet: any exit will do.
    bed.gateway.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = bed.gateway.wait(WAIT).unwrap();
    let log = bed.dir.path().join(log);
    bed.gateway = GatewayProcess::start_with(&bed.config, &log, args, env).unwrap();
    log
}

/// SIGTERM, and the gateway's clean exit (it has served a request, so it
/// watches the signal).
fn stop(gateway: &mut GatewayProcess) {
    gateway.signal(nix::sys::signal::Signal::SIGTERM);
    let status = gateway.wait(WAIT).unwrap();
    assert!(status.success(), "the gateway stops cleanly: {status}");
}

/// Publishes one INTERNAL clue as cz-eeb.
async fn publish_clue(bed: &Testbed, id: &str) {
    let mut eeb = bed.client("cz-eeb").await;
    publish(
        &mut eeb,
        notification(id, "CZ-2026-LOG-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
}

/// Waits until `log` holds `needle`.
async fn wait_for(log: &Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} never logged:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_carry_the_request_span() {
    let mut bed = Testbed::start().unwrap();
    // Without NO_COLOR: a file is not a terminal, which alone decides.
    let log = relaunch(
        &mut bed,
        "json.log",
        &["--log-format", "json"],
        &[("NO_COLOR", None)],
    );
    publish_clue(&bed, "logs-1").await;
    wait_for(&log, "request finished").await;
    stop(&mut bed.gateway);

    let bytes = std::fs::read(&log).unwrap();
    assert!(!bytes.contains(&0x1b), "no escape codes in a log file");
    let text = String::from_utf8(bytes).unwrap();
    assert!(!text.contains(SECRET), "content never reaches the log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.len() > 3, "{text}");
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["target"].is_string(), "{line}");
        assert!(line["fields"].is_object(), "{line}");
    }
    let finished = lines
        .iter()
        .find(|line| {
            line["fields"]["message"] == "request finished" && line["span"]["rpc"] == PUBLISH_RPC
        })
        .unwrap_or_else(|| panic!("no finished Publish line:\n{text}"));
    assert_eq!(finished["level"], "INFO");
    assert_eq!(finished["span"]["name"], "request");
    assert_eq!(finished["span"]["agency"], "cz-eeb");
    assert_eq!(finished["span"]["grpc.status"], 0);
    assert_eq!(finished["fields"]["grpc.status"], 0);
    assert!(finished["span"]["elapsed_ms"].is_number(), "{finished}");
    let peer = finished["span"]["peer"].as_str().unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "{finished}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_logs_in_a_file_carry_no_escape_codes() {
    let mut bed = Testbed::start().unwrap();
    let log = relaunch(&mut bed, "pretty.log", &[], &[("NO_COLOR", None)]);
    publish_clue(&bed, "logs-1").await;
    let text = wait_for(&log, "request finished").await;
    assert!(!text.as_bytes().contains(&0x1b), "{text:?}");
    let finished = text
        .lines()
        .find(|line| line.contains("request finished") && line.contains(PUBLISH_RPC))
        .unwrap_or_else(|| panic!("no finished Publish line:\n{text}"));
    assert!(finished.contains(" INFO "), "{finished}");
    assert!(finished.contains("agency=cz-eeb"), "{finished}");
    assert!(finished.contains("grpc.status=0"), "{finished}");
    assert!(!text.contains(SECRET), "content never reaches the log");

    // The format can come from the environment as well.
    let log = relaunch(
        &mut bed,
        "env-json.log",
        &[],
        &[("LIANDONG_LOG_FORMAT", Some("json"))],
    );
    publish_clue(&bed, "logs-2").await;
    let text = wait_for(&log, "request finished").await;
    for line in text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(line["level"].is_string(), "{line}");
    }
}

/// An OTLP/HTTP trace receiver: accepts `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, answers as a collector does, and hands
/// each decoded request to the test.
async fn otlp_receiver() -> (String, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (sent, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sent = sent.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let sent = sent.clone();
                    async move { Ok::<_, Infallible>(answer(request, &sent).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (endpoint, received)
}

/// The collector's answer to one request.
async fn answer(
    request: http::Request<hyper::body::Incoming>,
    sent: &mpsc::UnboundedSender<ExportTraceServiceRequest>,
) -> http::Response<Full<Bytes>> {
    let reply = |status: u16, body: Vec<u8>| {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let protobuf = request
        .headers()
        .get("content-type")
        .is_some_and(|value| value == "application/x-protobuf");
    if request.method() != http::Method::POST || request.uri().path() != "/v1/traces" || !protobuf {
        return reply(404, Vec::new());
    }
    let Ok(body) = request.into_body().collect().await else {
        return reply(400, Vec::new());
    };
    match ExportTraceServiceRequest::decode(body.to_bytes()) {
        Ok(export) => {
            let _ = sent.send(export);
            reply(200, ExportTraceServiceResponse::default().encode_to_vec())
        }
        Err(_) => reply(400, Vec::new()),
    }
}

/// The string or integer value of attribute `key`.
fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value: &AnyValue| value.value.as_ref())
}

fn string(value: &str) -> any_value::Value {
    any_value::Value::StringValue(value.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_an_otlp_collector_when_the_gateway_stops() {
    let (endpoint, mut received) = otlp_receiver().await;
    let mut bed = Testbed::start_with(&format!(
        "\n[tracing]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"liandong-gateway-bed\"\n"
    ))
    .unwrap();
    // Batches wait ten minutes: only the flush at shutdown sends them.
    let log = relaunch(
        &mut bed,
        "otlp.log",
        &[],
        &[("OTEL_BSP_SCHEDULE_DELAY", Some("600000"))],
    );
    // The caller's trace is continued.
    let mut eeb = bed.client("cz-eeb").await;
    let mut request = tonic::Request::new(pb::PublishRequest {
        notification: Some(notification(
            "logs-1",
            "CZ-2026-LOG-1",
            Event::ClueShared,
            Level::Internal,
            &[],
        )),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    eeb.publish(request).await.unwrap();
    drop(eeb);
    wait_for(&log, "request finished").await;
    stop(&mut bed.gateway);

    let mut spans: Vec<(Vec<KeyValue>, Span)> = Vec::new();
    while let Ok(export) = received.try_recv() {
        for resource_spans in export.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default().attributes;
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| (resource.clone(), span)));
            }
        }
    }
    let (resource, publish) = spans
        .iter()
        .find(|(_, span)| {
            span.name == "request"
                && attribute(&span.attributes, "rpc") == Some(&string(PUBLISH_RPC))
        })
        .unwrap_or_else(|| {
            panic!(
                "no Publish request span among {spans:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    assert_eq!(
        attribute(resource, "service.name"),
        Some(&string("liandong-gateway-bed"))
    );
    assert_eq!(
        attribute(&publish.attributes, "agency"),
        Some(&string("cz-eeb"))
    );
    assert_eq!(
        attribute(&publish.attributes, "grpc.status"),
        Some(&any_value::Value::IntValue(0))
    );
    assert_eq!(publish.kind, SpanKind::Server as i32);
    assert_eq!(hex::encode(&publish.trace_id), TRACE_ID);
    assert_eq!(hex::encode(&publish.parent_span_id), PARENT_SPAN_ID);
    for (_, span) in &spans {
        let text = format!("{span:?}");
        assert!(!text.contains(SECRET), "content never reaches a span");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_while_the_collector_is_down() {
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut bed = Testbed::start_with(&format!(
        "\n[tracing]\notlp_endpoint = \"http://{closed}\"\n"
    ))
    .unwrap();
    // Exports every 100 ms, so that several fail while the test runs.
    let log = relaunch(
        &mut bed,
        "down.log",
        &[],
        &[("OTEL_BSP_SCHEDULE_DELAY", Some("100"))],
    );
    for i in 0..3 {
        publish_clue(&bed, &format!("down-{i}")).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let text = wait_for(&log, "cannot export spans to the OTLP collector").await;
    stop(&mut bed.gateway);
    let text = std::fs::read_to_string(&log).unwrap_or(text);
    // Three batches failed at least; the warning is throttled to one line.
    assert_eq!(
        text.matches("cannot export spans to the OTLP collector")
            .count(),
        1,
        "{text}"
    );
    assert_eq!(bed.stored_count().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_logs_follow_the_chosen_format_without_escape_codes() {
    let bed = Testbed::start().unwrap();
    let dir = bed.dir.path();
    let pki = &bed.pki.dir;
    for (format, id) in [("json", "adapter-json-1"), ("pretty", "adapter-pretty-1")] {
        let clue = dir.join(format!("{id}.json"));
        std::fs::write(
            &clue,
            serde_json::json!({
                "notification_id": id,
                "case_ref": "CZ-2026-LOG-2",
                "event": "EVENT_TYPE_CLUE_SHARED",
                "confidentiality": "CONFIDENTIALITY_INTERNAL",
                "region": "140400",
                "occurred_at": "2026-11-20T08:30:00Z",
                "summary": SECRET,
            })
            .to_string(),
        )
        .unwrap();
        let log = dir.join(format!("adapter-{format}.log"));
        let status = std::process::Command::new(binary("liandong-adapter"))
            .args(["--log-format", format, "--gateway", &bed.gateway.url()])
            .arg("--ca")
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("agencies/cz-eeb.crt"))
            .arg("--key")
            .arg(pki.join("agencies/cz-eeb.key"))
            .arg("send")
            .arg("--direct")
            .arg(&clue)
            .env("LIANDONG_LOG", "info")
            .env_remove("NO_COLOR")
            .env_remove("LIANDONG_LOG_FORMAT")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .status()
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(status.success(), "{status}: {text}");
        assert!(!text.as_bytes().contains(&0x1b), "{text:?}");
        assert!(!text.contains(SECRET), "content never reaches the log");
        let published = text
            .lines()
            .find(|line| line.contains("published"))
            .unwrap_or_else(|| panic!("no published line: {text}"));
        if format == "json" {
            for line in text.lines() {
                let line: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(line["timestamp"].is_string(), "{line}");
            }
            let published: serde_json::Value = serde_json::from_str(published).unwrap();
            assert_eq!(published["fields"]["notification.id"], id);
        } else {
            assert!(
                published.contains(&format!("notification.id={id}")),
                "{published}"
            );
        }
    }
}
