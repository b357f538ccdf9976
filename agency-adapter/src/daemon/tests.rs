use crate::config::PartialGateway;
use crate::testing::{self, MockGateway, Script, eventually, notification_json};

use super::*;

const HTTP_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A daemon config for the mock gateway's credentials, with an HTTP source
/// on a free port and a state file in `dir`.
fn config(dir: &std::path::Path, gateway: &MockGateway) -> DaemonConfig {
    let key = liandong_certs::SigningKey::generate().unwrap();
    std::fs::write(dir.join("cz-psb.signing.pk8"), key.pkcs8_der()).unwrap();
    std::fs::write(dir.join("http.token"), HTTP_TOKEN).unwrap();
    std::fs::set_permissions(
        dir.join("http.token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let settings = &gateway.settings;
    let text = format!(
        "agency = \"cz-psb\"\nsigning_key = \"cz-psb.signing.pk8\"\n\
         [gateway]\nurl = \"{}\"\nserver_name = \"localhost\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
         [outbox]\npath = \"state/adapter.db\"\nretry_initial_ms = 10\nretry_max_ms = 50\n\
         [[source]]\nkind = \"http\"\nlisten = \"127.0.0.1:0\"\ntoken_file = \"http.token\"\n\
         [[source]]\nkind = \"folder\"\npath = \"inbox\"\npoll_interval_ms = 20\n",
        settings.url,
        settings.ca.display(),
        settings.cert.display(),
        settings.key.display()
    );
    let file = dir.join("adapter.toml");
    std::fs::write(&file, &text).unwrap();
    DaemonConfig::load(&file, PartialGateway::default()).unwrap()
}

#[tokio::test]
async fn the_daemon_publishes_what_its_sources_accept_and_stops_cleanly() {
    let gateway = MockGateway::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &gateway);
    let daemon = Daemon::prepare(config.clone()).await.unwrap();
    assert!(daemon.key_id().starts_with("cz-psb:"));
    let addr = daemon.http_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(daemon.run(async {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .post(format!("http://{addr}/v1/notifications"))
        .bearer_auth(HTTP_TOKEN)
        .header("content-type", "application/json")
        .body(notification_json(Some("d-1"), "a"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    std::fs::write(
        dir.path().join("inbox/n.json"),
        notification_json(Some("d-2"), "b"),
    )
    .unwrap();
    gateway
        .wait_until(|seen| seen.stored == ["d-1", "d-2"])
        .await;

    stop.send(()).unwrap();
    tokio::time::timeout(STOP_GRACE, task)
        .await
        .unwrap()
        .unwrap();
    let store = Store::open_existing(&config.outbox.path).await.unwrap();
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!((snapshot.outbox_depth, snapshot.sent), (0, 2));
    assert!(snapshot.daemon.unwrap().stopped_at.is_some());
    eventually("the listener is closed", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn what_cannot_work_is_refused_before_starting() {
    let gateway = MockGateway::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path(), &gateway);

    let mut config = good.clone();
    config.signing_key = dir.path().join("absent.pk8");
    let err = Daemon::prepare(config).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("absent.pk8: cannot read the signing key"),
        "{err}"
    );
    assert_eq!(err.exit_code(), exit::USAGE);

    let mut config = good.clone();
    config.gateway.key = dir.path().join("absent.key");
    let err = Daemon::prepare(config).await.unwrap_err();
    assert!(err.to_string().contains("absent.key: cannot read"), "{err}");
    assert_eq!(err.exit_code(), exit::USAGE);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = good.clone();
    let token_file = dir.path().join("http.token");
    config.sources = vec![SourceSettings::Http(crate::config::daemon::HttpSource {
        listen: taken.local_addr().unwrap(),
        token_file: token_file.clone(),
        public_address: None,
    })];
    let err = Daemon::prepare(config).await.unwrap_err();
    assert!(matches!(err, DaemonError::Bind { .. }), "{err:?}");
    assert_eq!(err.exit_code(), exit::OS);
    // The failed start left the lease free.
    Daemon::prepare(good).await.unwrap();
    let _ = testing::FAST_RETRY;
}

#[test]
fn another_live_daemon_on_the_same_state_is_a_temporary_failure() {
    let err = DaemonError::State(StoreError::AlreadyRunning {
        path: "state.db".into(),
        pid: 1,
    });
    assert_eq!(err.exit_code(), exit::TEMPFAIL);
    assert_eq!(
        err.to_string(),
        "state.db: another liandong-adapter daemon (pid 1) is running on this state file"
    );
}
