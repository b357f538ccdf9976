//! Attacks on the agency adapter from its own host, tried against the real
//! daemon: a web page driving or reading the loopback HTTP source
//! (cross-origin posts, no or a wrong token, non-JSON simple requests, DNS
//! rebinding), whoever can write the drop folder planting symbolic links
//! or swapping `rejected/`, or naming files to forge log lines, webhooks
//! reached over plain HTTP or through a CA other than the configured one,
//! and a client certificate running out unnoticed.
//!
//! Each test tries the attack, asserts the refusal, and asserts that
//! nothing changed (nothing accepted into the outbox, the victim file
//! intact, nothing written where the attacker pointed). None depends on
//! the gateway's store backend, so they run on the SQLite pass only.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use liandong_certs::{Authority, ClientSpec};
use liandong_core::pb::{Confidentiality as Level, EventType as Event};
use liandong_tests::adapter_bed::{
    AdapterBed, AdapterProcess, HTTP_TOKEN, adapter_command, free_port, http, http_source_config,
    status, wait_for,
};
use liandong_tests::hostile::{TlsWebhook, raw_request};
use liandong_tests::{notification, publish, skip_unless_sqlite};

/// The publishing agency: a county environment bureau.
const EEB: &str = "cz-eeb-xiangyuan";
/// The receiving agency of the webhook and sink tests.
const PSB: &str = "cz-psb-xiangyuan";

const LONG: Duration = Duration::from_secs(30);

const BACKEND: &str = "the adapter's defences do not depend on the gateway's store";

/// The JSON form of a clue with this id.
fn clue(id: &str) -> String {
    json!({
        "notification_id": id,
        "case_ref": "CZ-XY-2026-HW-0042",
        "event": "EVENT_TYPE_CLUE_SHARED",
        "confidentiality": "CONFIDENTIALITY_INTERNAL",
        "region": "140423",
        "occurred_at": "2026-11-20T08:30:00Z",
        "summary": "厂区外疑似倾倒危险废物",
    })
    .to_string()
}

/// An adapter of the environment bureau with only the HTTP source, running
/// (no gateway: what it accepts stays in its outbox).
fn http_daemon(bed: &AdapterBed) -> (PathBuf, u16, AdapterProcess) {
    let port = free_port();
    let config = bed.adapter_config("eeb", EEB, &http_source_config(port));
    let adapter = AdapterProcess::start(&config, &bed.path("eeb.log"));
    (config, port, adapter)
}

/// Notifications waiting in the outbox of the adapter of `config`.
fn pending(config: &Path) -> u64 {
    status(config).1["outbox"]["pending"]
        .as_u64()
        .expect("a pending count")
}

/// Asserts that `id` never reached the outbox.
fn not_accepted(config: &Path, port: u16, id: &str) {
    assert_eq!(pending(config), 0, "nothing was accepted");
    let answer = http(port, "GET", &format!("/v1/notifications/{id}"), "");
    assert_eq!(answer.status, 404, "{:?}", answer.body);
}

/// Asserts that an honest request still gets through (so the refusals
/// above are the defence, not a broken endpoint).
fn honest_post_is_accepted(config: &Path, port: u16) {
    let answer = http(port, "POST", "/v1/notifications", &clue("honest-1"));
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    assert_eq!(pending(config), 1);
}

#[test]
fn cross_origin_post_to_http_source_is_refused() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = AdapterBed::new();
    let (config, port, mut adapter) = http_daemon(&bed);
    // What `fetch(url, {method: "POST", mode: "no-cors", body})` sends from
    // a page: a simple request, no preflight, text/plain, an Origin.
    let simple = raw_request(
        port,
        &format!(
            "POST /v1/notifications HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Origin: https://evil.example\r\nContent-Type: text/plain;charset=UTF-8\r\n"
        ),
        &clue("forged-1"),
    );
    assert_eq!(simple.status, 403, "{:?}", simple.body);
    assert_eq!(simple.body["error"]["code"], "cross_origin");
    // The Origin alone refuses: even with the token and JSON (a page that
    // somehow learnt the token), and for the opaque origin `null`.
    let same_host = format!("http://127.0.0.1:{port}");
    for origin in ["https://evil.example", "null", same_host.as_str()] {
        let answer = raw_request(
            port,
            &format!(
                "POST /v1/notifications HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\n\
                 Authorization: Bearer {HTTP_TOKEN}\r\nContent-Type: application/json\r\n"
            ),
            &clue("forged-1"),
        );
        assert_eq!(
            (answer.status, answer.body["error"]["code"].clone()),
            (403, json!("cross_origin")),
            "{origin}"
        );
    }
    not_accepted(&config, port, "forged-1");
    honest_post_is_accepted(&config, port);
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[test]
fn post_without_token_is_refused() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = AdapterBed::new();
    let (config, port, mut adapter) = http_daemon(&bed);
    let answer = raw_request(
        port,
        &format!(
            "POST /v1/notifications HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/json\r\n"
        ),
        &clue("forged-1"),
    );
    assert_eq!(answer.status, 401, "{:?}", answer.body);
    assert_eq!(answer.body["error"]["code"], "unauthorized");
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    // Reading is refused too: ids, states and the gateway's reasons are
    // not for anyone on the host.
    for path in ["/v1/status", "/v1/notifications/honest-1"] {
        let answer = raw_request(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"),
            "",
        );
        assert_eq!(answer.status, 401, "{path}: {:?}", answer.body);
        assert!(answer.body.get("outbox").is_none());
    }
    not_accepted(&config, port, "forged-1");
    honest_post_is_accepted(&config, port);
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[test]
fn post_with_wrong_token_is_refused() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = AdapterBed::new();
    let (config, port, mut adapter) = http_daemon(&bed);
    let shorter = &HTTP_TOKEN[..HTTP_TOKEN.len() - 1];
    let longer = format!("{HTTP_TOKEN}x");
    let mut flipped = HTTP_TOKEN.as_bytes().to_vec();
    flipped[0] ^= 1;
    let flipped = String::from_utf8(flipped).unwrap();
    for authorization in [
        "Bearer wrong-token-of-some-length".to_owned(),
        format!("Bearer {shorter}"),
        format!("Bearer {longer}"),
        format!("Bearer {flipped}"),
        "Bearer ".to_owned(),
        format!("Basic {HTTP_TOKEN}"),
        HTTP_TOKEN.to_owned(),
    ] {
        let answer = raw_request(
            port,
            &format!(
                "POST /v1/notifications HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                 Authorization: {authorization}\r\nContent-Type: application/json\r\n"
            ),
            &clue("forged-1"),
        );
        assert_eq!(
            (answer.status, answer.body["error"]["code"].clone()),
            (401, json!("unauthorized")),
            "{authorization}"
        );
        let text = answer.body.to_string();
        assert!(!text.contains(HTTP_TOKEN), "the token is never echoed");
    }
    not_accepted(&config, port, "forged-1");
    honest_post_is_accepted(&config, port);
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[test]
fn non_json_content_type_is_refused() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = AdapterBed::new();
    let (config, port, mut adapter) = http_daemon(&bed);
    let post = |content_type: Option<&str>, id: &str| {
        let header = content_type.map_or_else(String::new, |t| format!("Content-Type: {t}\r\n"));
        raw_request(
            port,
            &format!(
                "POST /v1/notifications HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                 Authorization: Bearer {HTTP_TOKEN}\r\n{header}"
            ),
            &clue(id),
        )
    };
    // The content types a page may send without a preflight, and none.
    for content_type in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonp"),
        None,
    ] {
        let answer = post(content_type, "forged-1");
        assert_eq!(
            (answer.status, answer.body["error"]["code"].clone()),
            (415, json!("unsupported_media_type")),
            "{content_type:?}"
        );
    }
    not_accepted(&config, port, "forged-1");
    // JSON with parameters is JSON.
    let answer = post(Some("Application/JSON; charset=utf-8"), "honest-1");
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    assert_eq!(pending(&config), 1);
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[test]
fn dns_rebinding_host_is_refused() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = AdapterBed::new();
    let (config, port, mut adapter) = http_daemon(&bed);
    // After rebinding, the page's own origin is evil.example:PORT: its
    // requests are same-origin (no Origin header) and carry that Host.
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        "127.0.0.1:1".to_owned(),
        "evil.example".to_owned(),
    ] {
        let status_read = raw_request(
            port,
            &format!(
                "GET /v1/status HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {HTTP_TOKEN}\r\n"
            ),
            "",
        );
        assert_eq!(
            (
                status_read.status,
                status_read.body["error"]["code"].clone()
            ),
            (421, json!("bad_host")),
            "{host}"
        );
        assert!(status_read.body.get("outbox").is_none(), "nothing read");
        let post = raw_request(
            port,
            &format!(
                "POST /v1/notifications HTTP/1.1\r\nHost: {host}\r\n\
                 Authorization: Bearer {HTTP_TOKEN}\r\nContent-Type: application/json\r\n"
            ),
            &clue("forged-1"),
        );
        assert_eq!(
            (post.status, post.body["error"]["code"].clone()),
            (421, json!("bad_host")),
            "{host}"
        );
    }
    not_accepted(&config, port, "forged-1");
    // The loopback names of the endpoint are served.
    for host in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let answer = raw_request(
            port,
            &format!(
                "GET /v1/status HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {HTTP_TOKEN}\r\n"
            ),
            "",
        );
        assert_eq!(answer.status, 200, "{host}: {:?}", answer.body);
        assert_eq!(answer.body["outbox"]["pending"], 0);
    }
    honest_post_is_accepted(&config, port);
    assert!(adapter.stop(Signal::SIGTERM).success());
}

#[test]
fn token_file_readable_by_others_is_refused() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = AdapterBed::new();
    let config = bed.adapter_config("eeb", EEB, &http_source_config(free_port()));
    let config = config.to_str().unwrap();
    let token = bed.path("http.token");
    let mut refusals = Vec::new();
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
        refusals.push(adapter_command(&["--config", config, "run"], None));
    }
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&token, bed.path("real.token")).unwrap();
    std::os::unix::fs::symlink(bed.path("real.token"), &token).unwrap();
    refusals.push(adapter_command(&["--config", config, "run"], None));
    std::fs::remove_file(&token).unwrap();
    std::fs::write(&token, "").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    refusals.push(adapter_command(&["--config", config, "run"], None));
    std::fs::remove_file(&token).unwrap();
    refusals.push(adapter_command(&["--config", config, "run"], None));
    for (output, expected) in refusals.iter().zip([
        "chmod 600",
        "chmod 600",
        "chmod 600",
        "symbolic link",
        "is empty",
        "head -c 32 /dev/urandom",
    ]) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("http.token") && stderr.contains(expected),
            "{expected}: {stderr}"
        );
    }
}

/// Names an attacker would give the temporary file of a write of `name`,
/// and `name` itself, in every form the adapter used or might use.
fn predictable_names(name: &str) -> Vec<String> {
    vec![
        name.to_owned(),
        format!(".{name}.tmp"),
        format!(".{name}"),
        format!("{name}.tmp"),
        format!("{name}.part"),
        format!(".{name}.tmp.tmp"),
    ]
}

/// Plants a symbolic link to `victim` at each of `names` in `dir`.
fn plant(dir: &Path, names: &[String], victim: &Path) {
    for name in names {
        std::os::unix::fs::symlink(victim, dir.join(name)).unwrap();
    }
}

#[tokio::test]
async fn symlink_at_temp_file_name_is_not_followed() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let mut bed = AdapterBed::new();
    let victim = bed.path("victim.toml");
    std::fs::write(&victim, "precious = true\n").unwrap();

    // rejected/: the `.error` file of a refused drop file, and the file.
    let inbox = bed.path("inbox");
    let rejected = inbox.join("rejected");
    std::fs::create_dir_all(&rejected).unwrap();
    let mut names = Vec::new();
    for base in ["bad.json", "bad.1.json", "bad.2.json"] {
        names.extend(predictable_names(base));
        names.extend(predictable_names(&format!("{base}.error")));
    }
    names.sort();
    names.dedup();
    plant(&rejected, &names, &victim);

    // A folder sink: the delivery file of the first sequence.
    bed.start_gateway();
    let mut publisher = bed.client(EEB).await;
    let receipt = publish(
        &mut publisher,
        notification("link-1", "CZ-XY-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    let sink = bed.path("deliveries");
    std::fs::create_dir_all(&sink).unwrap();
    let delivered = format!("xy-psb-inbox-{:020}.json", receipt.sequence);
    plant(&sink, &predictable_names(&delivered), &victim);

    let config = bed.adapter_config(
        "psb",
        PSB,
        "\n[[source]]\nkind = \"folder\"\npath = \"inbox\"\npoll_interval_ms = 50\n\
         \n[[subscription]]\nname = \"xy-psb-inbox\"\nstart = \"beginning\"\n\
         sink = { kind = \"folder\", path = \"deliveries\" }\n",
    );
    let mut adapter = AdapterProcess::start(&config, &bed.path("psb.log"));
    std::fs::write(inbox.join("bad.json.part"), "not json").unwrap();
    std::fs::rename(inbox.join("bad.json.part"), inbox.join("bad.json")).unwrap();
    wait_for("the bad drop file is rejected", LONG, || {
        (!inbox.join("bad.json").exists()).then_some(())
    });
    wait_for("the delivery is written", LONG, || {
        let meta = std::fs::symlink_metadata(sink.join(&delivered)).ok()?;
        meta.is_file().then_some(())
    });
    assert!(adapter.stop(Signal::SIGTERM).success());

    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious = true\n",
        "the victim is untouched"
    );
    // The refused file and its reason landed as regular files beside the
    // planted links, which still point where they did.
    let regular: Vec<String> = std::fs::read_dir(&rejected)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(regular.len(), 2, "{regular:?}");
    let reason = regular.iter().find(|n| n.ends_with(".error")).unwrap();
    assert!(
        std::fs::read_to_string(rejected.join(reason))
            .unwrap()
            .starts_with("bad.json: ")
    );
    let written: Value =
        serde_json::from_slice(&std::fs::read(sink.join(&delivered)).unwrap()).unwrap();
    assert_eq!(
        written["delivery"]["notification"]["notification_id"],
        "link-1"
    );
    for name in names.iter().filter(|n| !regular.contains(n)) {
        let link = rejected.join(name);
        if let Ok(target) = std::fs::read_link(&link) {
            assert_eq!(target, victim);
        }
    }
    // No temporary file was left behind.
    for dir in [&rejected, &sink] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            assert!(
                entry.file_type().unwrap().is_symlink()
                    || !(name.starts_with('.') && name.ends_with(".tmp")),
                "{name}"
            );
        }
    }
}

#[test]
fn replaced_rejected_folder_is_refused() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = AdapterBed::new();
    let inbox = bed.path("inbox");
    let config = bed.adapter_config(
        "eeb",
        EEB,
        "\n[[source]]\nkind = \"folder\"\npath = \"inbox\"\npoll_interval_ms = 50\n",
    );
    let log = bed.path("eeb.log");
    let mut adapter = AdapterProcess::start(&config, &log);
    let rejected = inbox.join("rejected");
    let elsewhere = bed.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    // Whoever writes the drop folder swaps rejected/ for a link.
    std::fs::rename(&rejected, inbox.join("old-rejected")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &rejected).unwrap();
    std::fs::write(inbox.join("bad.json"), "not json").unwrap();
    wait_for("the swap is noticed", LONG, || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("is a symbolic link, not a folder")
            .then_some(())
    });
    assert!(
        inbox.join("bad.json").exists(),
        "the file stays where it is"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // A real folder others may write into is refused too.
    std::fs::remove_file(&rejected).unwrap();
    std::fs::create_dir(&rejected).unwrap();
    std::fs::set_permissions(&rejected, std::fs::Permissions::from_mode(0o777)).unwrap();
    wait_for("the shared folder is refused", LONG, || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("is writable by others (mode 777)")
            .then_some(())
    });
    assert!(inbox.join("bad.json").exists());
    assert_eq!(std::fs::read_dir(&rejected).unwrap().count(), 0);

    // Once it is the adapter's own again, the file is rejected as usual.
    std::fs::set_permissions(&rejected, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_for("the file is rejected", LONG, || {
        rejected.join("bad.json.error").exists().then_some(())
    });
    assert!(adapter.stop(Signal::SIGTERM).success());
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(pending(&config), 0);

    // A daemon does not even start on a swapped folder.
    std::fs::remove_dir_all(&rejected).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &rejected).unwrap();
    let output = adapter_command(&["--config", config.to_str().unwrap(), "run"], None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(73), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is a symbolic link, not a folder"),
        "{stderr}"
    );
}

#[test]
fn drop_file_name_with_control_characters_is_refused() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = AdapterBed::new();
    let inbox = bed.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let forged =
        "forged\n2026-11-30T00:00:00.000000Z  INFO drop file accepted file=\"x.json\".json";
    let names: Vec<&OsStr> = vec![
        OsStr::new(forged),
        OsStr::new("tab\there.json"),
        OsStr::new("esc\u{1b}[2J.json"),
        OsStr::new("del\u{7f}.json"),
        OsStr::new("cr\rhere.json"),
        OsStr::from_bytes(b"latin1-\xe9.json"),
    ];
    for (i, name) in names.iter().enumerate() {
        std::fs::write(inbox.join(name), clue(&format!("named-{i}"))).unwrap();
    }
    let config = bed.adapter_config(
        "eeb",
        EEB,
        "\n[[source]]\nkind = \"folder\"\npath = \"inbox\"\npoll_interval_ms = 50\n",
    );
    let log = bed.path("eeb.log");
    let mut adapter = AdapterProcess::start(&config, &log);
    // Two honest files, one after the other, prove that later scans ran.
    for honest in ["ok-1.json", "ok-2.json"] {
        std::fs::write(inbox.join(honest), clue(honest.trim_end_matches(".json"))).unwrap();
        wait_for("the honest file is accepted", LONG, || {
            inbox.join("done").join(honest).exists().then_some(())
        });
    }
    assert!(adapter.stop(Signal::SIGTERM).success());

    for name in &names {
        assert!(inbox.join(name).exists(), "{name:?} stays where it is");
    }
    assert_eq!(
        std::fs::read_dir(inbox.join("rejected")).unwrap().count(),
        0
    );
    assert_eq!(std::fs::read_dir(inbox.join("done")).unwrap().count(), 2);
    assert_eq!(pending(&config), 2, "only the honest files were accepted");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("drop file refused").count(),
        names.len(),
        "each refused name is logged once: {text}"
    );
    assert!(text.contains(r#"forged\n2026-11-30"#), "escaped: {text}");
    assert!(text.contains(r"esc\u{1b}[2J.json"), "escaped: {text}");
    assert!(text.contains(r"latin1-\xE9.json"), "escaped: {text}");
    assert!(
        !text.lines().any(|l| l.starts_with("2026-11-30T00:00:00")),
        "no forged log line: {text}"
    );
    assert!(!text.contains('\u{1b}'), "no raw escape reaches the log");
}

#[test]
fn webhook_plain_http_to_remote_host_is_refused() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = AdapterBed::new();
    for (table, field) in [
        (
            "\n[[subscription]]\nname = \"xy-psb-inbox\"\n\
             sink = { kind = \"webhook\", url = \"http://case-system.psb.example/hook\" }\n",
            "`subscription[0].sink.url`",
        ),
        (
            "\n[dead_letter]\nsink = { kind = \"webhook\", url = \"http://10.20.30.40:8080/dead\" }\n",
            "`dead_letter.sink.url`",
        ),
    ] {
        let config = bed.adapter_config("psb", PSB, table);
        let output = adapter_command(&["--config", config.to_str().unwrap(), "run"], None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(field)
                && stderr.contains("plain http:// is only allowed to a loopback host"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn webhook_pins_configured_ca() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let mut bed = AdapterBed::new();
    bed.start_gateway();
    let mut publisher = bed.client(EEB).await;
    let receipt = publish(
        &mut publisher,
        notification("pin-1", "CZ-XY-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();

    // A webhook whose certificate comes from another CA, which the
    // adapter's system roots trust (SSL_CERT_FILE names it), as a
    // compromised or over-broad public CA would be.
    let other = Authority::new("Some Other CA").unwrap();
    let other_ca = bed.path("other-ca.pem");
    std::fs::write(&other_ca, other.cert_pem()).unwrap();
    let webhook = TlsWebhook::start(&other.server(&["127.0.0.1"]).unwrap());
    let url = &webhook.url;
    let config = bed.adapter_config(
        "psb",
        PSB,
        &format!(
            // Pinned to the dev CA: the other CA's certificate is refused.
            "\n[[subscription]]\nname = \"pinned\"\nstart = \"beginning\"\n\
             sink = {{ kind = \"webhook\", url = \"{url}\", ca = \"pki/ca.crt\", \
             retry_initial_ms = 50, retry_max_ms = 200 }}\n\
             \n[[subscription]]\nname = \"system-roots\"\nstart = \"beginning\"\n\
             sink = {{ kind = \"webhook\", url = \"{url}\" }}\n\
             \n[[subscription]]\nname = \"pinned-to-its-ca\"\nstart = \"beginning\"\n\
             sink = {{ kind = \"webhook\", url = \"{url}\", ca = \"other-ca.pem\" }}\n"
        ),
    );
    let mut adapter = AdapterProcess::start_with_env(
        &config,
        &bed.path("psb.log"),
        &[("SSL_CERT_FILE", &other_ca)],
    );
    let sequence = receipt.sequence as i64;
    let deadline = tokio::time::Instant::now() + LONG;
    while bed.acked_through(PSB, "system-roots").await < sequence
        || bed.acked_through(PSB, "pinned-to-its-ca").await < sequence
        || webhook.failed_handshakes() < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries not as expected: answered {}, failed handshakes {}",
            webhook.answered(),
            webhook.failed_handshakes()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, report) = status(&config);
    adapter.stop(Signal::SIGTERM);

    assert_eq!(
        bed.acked_through(PSB, "pinned").await,
        0,
        "nothing acknowledged through the refused server"
    );
    let subscriptions: Vec<&str> = webhook
        .bodies()
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).unwrap())
        .map(|b| match b["subscription"].as_str().unwrap() {
            "system-roots" => "system-roots",
            "pinned-to-its-ca" => "pinned-to-its-ca",
            other => panic!("{other} reached the webhook"),
        })
        .collect();
    assert!(subscriptions.contains(&"system-roots"));
    let pinned = report["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "pinned")
        .unwrap();
    assert!(
        pinned["last_error"]
            .as_str()
            .unwrap()
            .starts_with("webhook unreachable"),
        "{pinned}"
    );
}

#[test]
fn status_warns_of_certificate_expiry() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = AdapterBed::new();
    let authority = &bed.pki.authority;
    let mut soon = ClientSpec::agency(EEB);
    // Valid from a day ago for eleven days: ten left.
    soon.not_after = soon.not_before + Duration::from_secs(11 * 86_400);
    let soon = authority.client(&soon).unwrap();
    std::fs::write(bed.path("soon.crt"), &soon.cert_pem).unwrap();
    std::fs::write(bed.path("soon.key"), &soon.key_pem).unwrap();
    let port = free_port();
    let config = bed.adapter_config("eeb", EEB, &http_source_config(port));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("pki/agencies/{EEB}.crt\"\nkey = \"pki/agencies/{EEB}.key"),
        "soon.crt\"\nkey = \"soon.key",
    );
    std::fs::write(&config, text).unwrap();
    let log = bed.path("eeb.log");
    let mut adapter = AdapterProcess::start(&config, &log);
    wait_for("the expiry is logged at start", LONG, || {
        adapter
            .log()
            .contains("the client certificate expires soon; renew it")
            .then_some(())
    });

    let (code, report) = status(&config);
    let days = report["certificate"]["days_left"].as_i64().unwrap();
    assert!((9..=10).contains(&days), "{report}");
    assert!(
        report["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("the client certificate expires in {days} days")),
        "{report}"
    );
    assert_eq!(code, 0, "a warning is not yet unhealthy: {report}");
    let served = http(port, "GET", "/v1/status", "");
    assert_eq!(served.body["certificate"], report["certificate"]);
    assert_eq!(served.body["warnings"], report["warnings"]);

    // Renewed too late: read again at each report, it is now an error.
    let expired = authority
        .client(&ClientSpec::agency(EEB).expired())
        .unwrap();
    std::fs::write(bed.path("soon.crt"), &expired.cert_pem).unwrap();
    let served = http(port, "GET", "/v1/status", "");
    assert_eq!(served.body["healthy"], false);
    assert!(
        served.body["problems"].as_array().unwrap().iter().any(|p| p
            .as_str()
            .unwrap()
            .starts_with("the client certificate expired at")),
        "{}",
        served.body
    );
    let (code, report) = status(&config);
    assert_eq!(code, 2, "{report}");
    assert!(report["certificate"]["days_left"].as_i64().unwrap() < 0);
    assert!(adapter.stop(Signal::SIGTERM).success());
}
