use crate::store::audit::{AuditProblem, CheckpointCheck, Tampering};

use super::*;

fn checkpoint(matches: bool, signature_valid: Option<bool>) -> CheckpointCheck {
    CheckpointCheck {
        source: "database".into(),
        row_id: 7,
        signature_valid,
        matches,
    }
}

#[test]
fn a_clean_walk_ends_with_done_clean_and_the_checkpoints_that_verified() {
    let report = AuditReport {
        rows_checked: 12,
        last_id: Some(12),
        checkpoints: vec![
            checkpoint(true, Some(true)),
            checkpoint(true, None),
            checkpoint(false, Some(true)),
        ],
        ..AuditReport::default()
    };
    let last = conclusion(&report, 12);
    assert!(last.done && last.clean);
    assert!(last.problems.is_empty());
    assert_eq!((last.rows_checked, last.rows_total), (12, 12));
    assert_eq!(
        last.checkpoints_verified, 1,
        "only a matching checkpoint whose signature verified counts"
    );
}

#[test]
fn a_walk_with_problems_lists_them_in_words_first_first() {
    let report = AuditReport {
        rows_checked: 20,
        problems: vec![
            AuditProblem {
                kind: Tampering::Changed,
                row: Some(4),
                detail: "hash does not match".into(),
            },
            AuditProblem {
                kind: Tampering::Trigger,
                row: None,
                detail: "audit_log_no_update is missing".into(),
            },
        ],
        problems_omitted: 3,
        ..AuditReport::default()
    };
    // Rows appended during the walk are counted in the total.
    let last = conclusion(&report, 18);
    assert!(last.done && !last.clean);
    assert_eq!(last.rows_total, 20);
    assert_eq!(
        last.problems,
        [
            "changed at row 4: hash does not match",
            "trigger: audit_log_no_update is missing",
            "… and 3 more",
        ]
    );
}

#[tokio::test]
async fn progress_is_sent_at_the_start_and_as_the_walk_goes() {
    let (sender, mut receiver) = mpsc::channel(256);
    let progress = StreamProgress {
        sender,
        total: AtomicU64::new(0),
        checked: AtomicU64::new(0),
    };
    progress.start(200);
    for _ in 0..200 {
        progress.advance();
    }
    drop(progress);
    let mut seen = Vec::new();
    while let Some(message) = receiver.recv().await {
        seen.push(message.unwrap());
    }
    assert_eq!(seen[0].rows_checked, 0);
    assert_eq!(seen[0].rows_total, 200);
    assert_eq!(seen.len(), 101, "the start, then every 2 rows of 200");
    assert!(seen.iter().all(|p| !p.done && p.rows_total == 200));
    assert_eq!(seen.last().unwrap().rows_checked, 200);
}
