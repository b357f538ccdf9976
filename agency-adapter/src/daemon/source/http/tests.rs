use crate::config::daemon::StatusSettings;
use crate::testing::{self, notification_json};

use super::*;

struct Endpoint {
    _dir: tempfile::TempDir,
    base: String,
    client: reqwest::Client,
    stop: CancellationToken,
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
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        router(acceptor, limits, 1 << 20),
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
