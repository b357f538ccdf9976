//! The `liandong-adapter` binary's exit codes and messages for what can be
//! checked without a gateway: usage errors (64), bad input (65) and an
//! unreachable gateway (69). Calls answered by a gateway are covered by the
//! library's tests and by the workspace's end-to-end tests.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const INVALID: &str = r#"{"notification_id": "n-1", "case_ref": "CZ-1",
    "event": "CASE_FILED_IS_NOT_A_NAME"}"#;

const VALID: &str = r#"{"notification_id": "n-1", "case_ref": "CZ-1",
    "event": "EVENT_TYPE_CASE_FILED", "summary": "x"}"#;

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_liandong-adapter"))
        .args(args)
        .env_remove("LIANDONG_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Real credentials for agency `cz-psb`, and the flags naming them.
fn credentials(dir: &Path) -> Vec<String> {
    let ca = liandong_certs::Authority::new("Test CA").unwrap();
    let agency = ca.agency("cz-psb").unwrap();
    std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("a.crt"), &agency.cert_pem).unwrap();
    std::fs::write(dir.join("a.key"), &agency.key_pem).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    vec![
        "--ca".into(),
        path("ca.crt"),
        "--cert".into(),
        path("a.crt"),
        "--key".into(),
        path("a.key"),
        "--server-name".into(),
        "localhost".into(),
    ]
}

/// A loopback port nobody listens on, held (bound, never listening) as
/// long as the socket lives, so no parallel test can be handed it and
/// connections to it are refused.
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

#[test]
fn help_is_not_an_error() {
    let output = run(&["--help"], "");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("Usage: liandong-adapter"));
}

#[test]
fn usage_errors_exit_64() {
    let output = run(&[], "");
    assert_eq!(output.status.code(), Some(64));

    let output = run(&["tail", "--subscription", "s", "--event", "BOGUS"], "");
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("unknown event type \"BOGUS\""),
        "{}",
        stderr(&output)
    );

    let output = run(&["send", "--gateway", "https://127.0.0.1:7443"], VALID);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).starts_with("usage: no gateway.ca, gateway.cert, gateway.key given"),
        "{}",
        stderr(&output)
    );
    assert!(output.stdout.is_empty());

    let output = run(&["send", "--config", "/nonexistent/adapter.toml"], VALID);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).starts_with("/nonexistent/adapter.toml: cannot read"));
}

#[test]
fn unusable_credentials_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "send".to_owned(),
        "--gateway".into(),
        "https://127.0.0.1:7443".into(),
    ];
    args.extend(credentials(dir.path()));
    std::fs::remove_file(dir.path().join("a.key")).unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(&args, VALID);
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("a.key: cannot read"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn bad_input_exits_65_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let (_held, port) = closed_port();
    let url = format!("https://127.0.0.1:{port}");
    let mut args = vec!["send".to_owned(), "--gateway".into(), url];
    args.extend(credentials(dir.path()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let output = run(&args, INVALID);
    assert_eq!(output.status.code(), Some(65), "{}", stderr(&output));
    assert!(stderr(&output).starts_with("stdin: invalid liandong.v1.Notification JSON"));
    assert!(stderr(&output).contains("CASE_FILED_IS_NOT_A_NAME"));
    assert!(output.stdout.is_empty());

    let output = run(&args, "");
    assert_eq!(output.status.code(), Some(65));

    let mut with_file = args.clone();
    let absent = dir.path().join("absent.json").display().to_string();
    with_file.push(&absent);
    let output = run(&with_file, "");
    assert_eq!(output.status.code(), Some(65));
    assert!(stderr(&output).contains("absent.json: cannot read"));
}

#[test]
fn an_unreachable_gateway_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    let (_held, port) = closed_port();
    let url = format!("https://127.0.0.1:{port}");
    for command in [&["send", "-"][..], &["tail", "--subscription", "s"]] {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend(["--gateway".into(), url.clone()]);
        args.extend(credentials(dir.path()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run(&args, VALID);
        assert_eq!(
            output.status.code(),
            Some(69),
            "{command:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).starts_with(&format!("gateway {url}: cannot connect")),
            "{}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty());
    }
}
