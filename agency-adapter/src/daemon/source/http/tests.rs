use crate::config::daemon::StatusSettings;
use crate::testing::{self, notification_json};

use super::*;

const TOKEN: &str = "c2VjcmV0LXRva2VuLWZvci10ZXN0cw==";

struct Endpoint {
    _dir: tempfile::TempDir,
    base: String,
    client: reqwest::Client,
    stop: CancellationToken,
}

/// A token file holding `content` with `mode`.
fn token_file(dir: &std::path::Path, content: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("http.token");
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

async fn start(max_pending: u64) -> Endpoint {
    let (dir, store) = testing::store().await;
    let (acceptor, _, _) = testing::acceptor(&store, max_pending);
    let limits = Limits {
        status: StatusSettings {
            max_pending_age: std::time::Duration::from_secs(300),
            max_dead_letters: 0,
            max_failure: std::time::Duration::from_secs(300),
            require_daemon: false,
        },
        max_pending,
        certificate: crate::report::Certificate::Unchecked,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bound = listener.local_addr().unwrap();
    let base = format!("http://{bound}");
    let stop = CancellationToken::new();
    let token = HttpToken::load(&token_file(dir.path(), &format!("{TOKEN}\n"), 0o600)).unwrap();
    let guard = Guard::new(token, bound, None);
    tokio::spawn(serve(
        listener,
        router(acceptor, limits, None, 1 << 20, guard),
        stop.clone(),
    ));
    Endpoint {
        _dir: dir,
        base,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        stop,
    }
}

impl Endpoint {
    async fn post(&self, body: &str) -> (u16, Option<String>, Value) {
        let response = self
            .client
            .post(format!("{}/v1/notifications", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        (status, retry_after, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
        )
    }
}

#[tokio::test]
async fn accepted_is_202_with_the_local_id_and_repeating_it_is_idempotent() {
    let endpoint = start(10).await;
    let (status, _, body) = endpoint.post(&notification_json(Some("h-1"), "a")).await;
    assert_eq!(status, 202);
    assert_eq!(
        body,
        json!({"status": "accepted", "local_id": 1, "notification_id": "h-1",
               "duplicate": false, "state": "pending"})
    );
    let (status, _, body) = endpoint.post(&notification_json(Some("h-1"), "a")).await;
    assert_eq!(status, 202);
    assert_eq!(
        (body["local_id"].clone(), body["duplicate"].clone()),
        (json!(1), json!(true))
    );

    let (status, _, body) = endpoint
        .post(&notification_json(Some("h-1"), "changed"))
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(body["error"]["field"], "notification.notification_id");

    let (status, _, body) = endpoint.post(&notification_json(None, "a")).await;
    assert_eq!(status, 202);
    assert!(
        body["notification_id"]
            .as_str()
            .unwrap()
            .starts_with("cz-psb-")
    );

    let (status, body) = endpoint.get("/v1/notifications/h-1").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"local_id": 1, "notification_id": "h-1", "state": "pending"})
    );
    let (status, body) = endpoint.get("/v1/notifications/nope").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    endpoint.stop.cancel();
}

#[tokio::test]
async fn refusals_are_4xx_naming_the_field_and_a_full_outbox_is_503() {
    let endpoint = start(1).await;
    let (status, _, body) = endpoint.post(&notification_json(Some("h-1"), "")).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"code": "invalid_field", "field": "notification.summary",
                         "message": "notification.summary: is required"}})
    );
    let (status, _, body) = endpoint.post("not json").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_json"))
    );
    assert_eq!(body["error"]["field"], Value::Null);

    let (status, _, _) = endpoint.post(&notification_json(Some("h-1"), "a")).await;
    assert_eq!(status, 202);
    let (status, retry_after, body) = endpoint.post(&notification_json(Some("h-2"), "a")).await;
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(body["error"]["code"], "outbox_full");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outbox.max_pending = 1"),
        "{body}"
    );

    let (status, body) = endpoint.get("/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["outbox"]["pending"], 1);
    assert_eq!(body["healthy"], false);
    let (status, body) = endpoint.get("/elsewhere").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    endpoint.stop.cancel();
}

#[test]
fn token_files_that_others_could_read_or_swap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = HttpToken::load(&dir.path().join("absent")).unwrap_err();
    assert!(
        missing.reason.contains("head -c 32 /dev/urandom"),
        "{missing}"
    );
    for (content, mode, expected) in [
        ("", 0o600, "is empty"),
        ("  \n", 0o600, "is empty"),
        (TOKEN, 0o640, "group or others (mode 640)"),
        (TOKEN, 0o604, "group or others (mode 604)"),
        ("short", 0o600, "at least 16"),
        ("has a space inside it", 0o600, "without spaces"),
    ] {
        let path = token_file(dir.path(), content, mode);
        let err = HttpToken::load(&path).unwrap_err();
        assert!(err.reason.contains(expected), "{content:?} {mode:o}: {err}");
        assert!(!err.to_string().contains(TOKEN), "the token is never shown");
    }
    let real = token_file(dir.path(), TOKEN, 0o600);
    let link = dir.path().join("link.token");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = HttpToken::load(&link).unwrap_err();
    assert!(err.reason.contains("symbolic link"), "{err}");
    let token = HttpToken::load(&real).unwrap();
    assert_eq!(format!("{token:?}"), "HttpToken(<redacted>)");
    assert!(token.matches(TOKEN.as_bytes()));
    assert!(!token.matches(&TOKEN.as_bytes()[1..]));
    assert!(!token.matches(b""));
}

#[test]
fn the_guard_checks_origin_host_token_and_media_type_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let token = HttpToken::load(&token_file(dir.path(), TOKEN, 0o600)).unwrap();
    let guard = Guard::new(
        token,
        "10.1.2.3:7601".parse().unwrap(),
        Some("Adapter.EEB.example:7601"),
    );
    let headers = |pairs: &[(&'static str, &str)]| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    };
    let bearer = format!("Bearer {TOKEN}");
    let code = |method: Method, pairs: &[(&'static str, &str)]| {
        guard
            .check(&method, &headers(pairs))
            .map(|r| r.status().as_u16())
    };
    let good = [
        ("host", "127.0.0.1:7601"),
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    assert_eq!(code(Method::POST, &good), None);
    for host in [
        "localhost:7601",
        "LOCALHOST:7601",
        "[::1]:7601",
        "10.1.2.3:7601",
        "adapter.eeb.example:7601",
    ] {
        let mut pairs = good;
        pairs[0].1 = host;
        assert_eq!(code(Method::POST, &pairs), None, "{host}");
    }
    for host in [
        "evil.example:7601",
        "127.0.0.1:80",
        "127.0.0.1",
        "localhost.evil.example:7601",
    ] {
        let mut pairs = good;
        pairs[0].1 = host;
        assert_eq!(code(Method::GET, &pairs), Some(421), "{host}");
    }
    let with_origin = [
        good[0],
        good[1],
        good[2],
        ("origin", "http://127.0.0.1:7601"),
    ];
    assert_eq!(code(Method::GET, &with_origin), Some(403));
    assert_eq!(code(Method::GET, &[good[0]]), Some(401));
    for wrong in ["Bearer nope", "Basic abc", "bearer", TOKEN] {
        assert_eq!(
            code(Method::GET, &[good[0], ("authorization", wrong)]),
            Some(401),
            "{wrong}"
        );
    }
    let lower = format!("bearer {TOKEN}");
    assert_eq!(
        code(Method::GET, &[good[0], ("authorization", lower.as_str())]),
        None
    );
    for media in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        let mut pairs = good;
        pairs[2].1 = media;
        assert_eq!(code(Method::POST, &pairs), Some(415), "{media}");
    }
    assert_eq!(code(Method::POST, &good[..2]), Some(415));
    assert_eq!(code(Method::GET, &good[..2]), None);
}
