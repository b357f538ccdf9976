use crate::store::RowState;
use crate::testing::{self, notification_json};

use super::*;

fn folder() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox");
    prepare(&FolderSource {
        path: path.clone(),
        poll_interval: std::time::Duration::from_millis(10),
    })
    .unwrap();
    (dir, path)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != DONE && n != REJECTED)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn good_files_go_to_done_and_bad_ones_to_rejected_with_the_reason() {
    let (_state, store) = testing::store().await;
    let (acceptor, _, _) = testing::acceptor(&store, 10);
    let (_dir, inbox) = folder();
    std::fs::write(
        inbox.join("1-good.json"),
        notification_json(Some("f-1"), "a"),
    )
    .unwrap();
    std::fs::write(
        inbox.join("2-no-summary.json"),
        notification_json(Some("f-2"), ""),
    )
    .unwrap();
    std::fs::write(inbox.join("3-broken.json"), "{\"summary\": ").unwrap();
    std::fs::write(inbox.join("4-latin1.json"), b"{\"summary\": \"\xe9\"}").unwrap();
    std::fs::write(inbox.join("5-empty.json"), "").unwrap();

    let scan = scan(&inbox, &acceptor).await.unwrap();
    assert_eq!(scan.accepted, ["1-good.json"]);
    assert_eq!(
        scan.rejected,
        [
            "2-no-summary.json",
            "3-broken.json",
            "4-latin1.json",
            "5-empty.json"
        ]
    );
    assert!(names(&inbox).is_empty());
    assert_eq!(names(&inbox.join(DONE)), ["1-good.json"]);
    let rejected = inbox.join(REJECTED);
    assert_eq!(
        names(&rejected),
        [
            "2-no-summary.json",
            "2-no-summary.json.error",
            "3-broken.json",
            "3-broken.json.error",
            "4-latin1.json",
            "4-latin1.json.error",
            "5-empty.json",
            "5-empty.json.error",
        ]
    );
    let reason =
        |name: &str| std::fs::read_to_string(rejected.join(format!("{name}.error"))).unwrap();
    assert_eq!(
        reason("2-no-summary.json"),
        "2-no-summary.json: notification.summary: is required\n"
    );
    assert!(
        reason("3-broken.json").starts_with("3-broken.json: invalid liandong.v1.Notification JSON"),
        "{}",
        reason("3-broken.json")
    );
    assert!(reason("4-latin1.json").contains("not UTF-8"));
    assert!(reason("5-empty.json").contains("empty"));
    // The rejected file is kept as written.
    assert_eq!(
        std::fs::read_to_string(rejected.join("3-broken.json")).unwrap(),
        "{\"summary\": "
    );
    assert_eq!(
        store.state_of("f-1").await.unwrap(),
        Some((1, RowState::Pending))
    );
    assert_eq!(store.snapshot().await.unwrap().outbox_depth, 1);
}

#[tokio::test]
async fn files_not_yet_renamed_to_json_are_never_read() {
    let (_state, store) = testing::store().await;
    let (acceptor, _, _) = testing::acceptor(&store, 10);
    let (_dir, inbox) = folder();
    let half = &notification_json(Some("f-1"), "a")[..20];
    for name in ["n.json.tmp", ".n.json", "n.json.part", "n.txt", ".json"] {
        std::fs::write(inbox.join(name), half).unwrap();
    }
    std::fs::create_dir(inbox.join("dir.json")).unwrap();
    let scan = scan(&inbox, &acceptor).await.unwrap();
    assert_eq!(scan, Scan::default());
    assert_eq!(names(&inbox).len(), 6);
    assert!(names(&inbox.join(REJECTED)).is_empty());

    // Completed and renamed: read.
    std::fs::write(
        inbox.join("n.json.tmp"),
        notification_json(Some("f-1"), "a"),
    )
    .unwrap();
    std::fs::rename(inbox.join("n.json.tmp"), inbox.join("n.json")).unwrap();
    let scan = super::scan(&inbox, &acceptor).await.unwrap();
    assert_eq!(scan.accepted, ["n.json"]);
    assert!(is_ready("a.json") && !is_ready(".a.json") && !is_ready("a.json.tmp"));
}

#[tokio::test]
async fn a_file_read_again_after_a_crash_is_not_accepted_twice() {
    let (_state, store) = testing::store().await;
    let (acceptor, _, _) = testing::acceptor(&store, 10);
    let (_dir, inbox) = folder();
    let text = notification_json(None, "a");
    std::fs::write(inbox.join("n.json"), &text).unwrap();
    scan(&inbox, &acceptor).await.unwrap();
    // As if the adapter died after the commit, before the move.
    std::fs::write(inbox.join("n.json"), &text).unwrap();
    let again = scan(&inbox, &acceptor).await.unwrap();
    assert_eq!(again.accepted, ["n.json"]);
    assert_eq!(names(&inbox.join(DONE)), ["n.1.json", "n.json"]);
    assert_eq!(store.snapshot().await.unwrap().outbox_depth, 1);
}

#[tokio::test]
async fn a_full_outbox_leaves_files_where_they_are() {
    let (_state, store) = testing::store().await;
    let (acceptor, _, _) = testing::acceptor(&store, 1);
    let (_dir, inbox) = folder();
    for i in 1..=3 {
        std::fs::write(
            inbox.join(format!("{i}.json")),
            notification_json(Some(&format!("f-{i}")), "a"),
        )
        .unwrap();
    }
    let first = scan(&inbox, &acceptor).await.unwrap();
    assert_eq!(first.accepted, ["1.json"]);
    assert_eq!(first.deferred, ["2.json", "3.json"]);
    assert_eq!(names(&inbox), ["2.json", "3.json"]);
    assert!(names(&inbox.join(REJECTED)).is_empty());
    // Room again: the next scan takes them, in name order.
    store
        .mark_sent(&[crate::store::SentReceipt {
            local_id: 1,
            sequence: 1,
            received_at: 0,
            duplicate: false,
        }])
        .await
        .unwrap();
    let second = scan(&inbox, &acceptor).await.unwrap();
    assert_eq!(second.accepted, ["2.json"]);
}
