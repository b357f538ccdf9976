//! Contract tests of the audit chain, on SQLite and on PostgreSQL: each
//! tampering is done by raw SQL (after dropping the triggers that refuse
//! it, as an intruder with the database's credentials would) and the walk
//! must name the row and the kind.

use std::sync::Arc;

use super::*;
use crate::store::tests::{backends, postgres_schema_url};
use crate::store::verify::NoProgress;

fn entry(i: u64) -> AuditEntry {
    AuditEntry {
        agency: "cz-psb".into(),
        action: "DELIVERY",
        sequence: Some(i),
        sender: "cz-eeb".into(),
        notification_id: format!("n{i}"),
        decision: "FULL".into(),
        reason: "recipient".into(),
        peer: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 4000))),
    }
}

/// Rows 1 … `count`, each appended in a transaction of its own.
async fn append(store: &Store, count: u64) {
    for i in 1..=count {
        store.append_audit(&[entry(i)]).await.unwrap();
    }
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{:?}: {sql}: {e}", store.backend()));
}

/// What an intruder does first: the append-only triggers go.
async fn drop_triggers(store: &Store) {
    match store.backend() {
        Backend::Sqlite => {
            exec(store, "DROP TRIGGER audit_log_no_update").await;
            exec(store, "DROP TRIGGER audit_log_no_delete").await;
            exec(store, "DROP TRIGGER audit_checkpoints_no_delete").await;
        }
        Backend::Postgres => {
            exec(store, "DROP TRIGGER audit_log_no_change ON audit_log").await;
            exec(
                store,
                "DROP TRIGGER audit_checkpoints_no_change ON audit_checkpoints",
            )
            .await;
        }
    }
}

async fn verify(store: &Store, options: &AuditVerifyOptions) -> AuditReport {
    store.verify_audit(options, &NoProgress).await.unwrap()
}

/// The first problem's kind and row.
fn first(report: &AuditReport) -> (Tampering, Option<u64>) {
    let problem = report
        .first_problem()
        .unwrap_or_else(|| panic!("a problem must be found: {report:?}"));
    (problem.kind, problem.row)
}

async fn hash_of(store: &Store, id: i64) -> Vec<u8> {
    sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_clean_chain_verifies_and_every_row_is_linked() {
    for (store, _guard) in backends().await {
        append(&store, 4).await;
        store.append_audit(&[entry(5), entry(6)]).await.unwrap();
        let report = verify(&store, &AuditVerifyOptions::default()).await;
        assert!(report.is_clean(), "{:?}: {report:?}", store.backend());
        assert_eq!(report.rows_checked, 6);
        assert_eq!(report.last_id, Some(6));
        assert_eq!(
            report.triggers.len(),
            match store.backend() {
                Backend::Sqlite => 4,
                Backend::Postgres => 2,
            }
        );
        // The recorded hash is the documented formula over the row.
        let peer = "127.0.0.1:4000";
        let mut prev = GENESIS.to_vec();
        for id in 1..=6_i64 {
            let e = entry(id as u64);
            let at: i64 = sqlx::query_scalar("SELECT at FROM audit_log WHERE id = $1")
                .bind(id)
                .fetch_one(store.pool())
                .await
                .unwrap();
            let expected = row_hash(
                &prev,
                &ChainFields {
                    id: id as u64,
                    at,
                    actor: &e.agency,
                    action: e.action,
                    sequence: e.sequence,
                    sender: &e.sender,
                    notification_id: &e.notification_id,
                    outcome: &e.decision,
                    reason: &e.reason,
                    peer,
                },
            );
            assert_eq!(hash_of(&store, id).await, expected.to_vec());
            prev = expected.to_vec();
        }
        assert_eq!(
            store.audit_entries().await.unwrap()[0].peer,
            entry(1).peer,
            "the peer is stored"
        );
    }
}

#[tokio::test]
async fn audit_chain_detects_updated_row() {
    for (store, _guard) in backends().await {
        append(&store, 5).await;
        drop_triggers(&store).await;
        exec(
            &store,
            "UPDATE audit_log SET reason = 'forged' WHERE id = 3",
        )
        .await;
        let report = verify(&store, &AuditVerifyOptions::default()).await;
        assert_eq!(
            first(&report),
            (Tampering::Changed, Some(3)),
            "{:?}: {report:?}",
            store.backend()
        );
        // Only row 3: the rows after it still link to its recorded hash.
        let rows: Vec<Option<u64>> = report
            .problems
            .iter()
            .filter(|p| p.kind != Tampering::Trigger)
            .map(|p| p.row)
            .collect();
        assert_eq!(rows, [Some(3)], "{report:?}");
    }
}

#[tokio::test]
async fn audit_chain_detects_deleted_row() {
    for (store, _guard) in backends().await {
        append(&store, 5).await;
        drop_triggers(&store).await;
        exec(&store, "DELETE FROM audit_log WHERE id = 3").await;
        let report = verify(&store, &AuditVerifyOptions::default()).await;
        assert_eq!(
            first(&report),
            (Tampering::Deleted, Some(4)),
            "{:?}: {report:?}",
            store.backend()
        );
        assert!(
            report.problems[0].detail.contains("row 3 is missing"),
            "{report:?}"
        );
    }
}

#[tokio::test]
async fn audit_chain_detects_inserted_row() {
    for (store, _guard) in backends().await {
        append(&store, 5).await;
        drop_triggers(&store).await;
        // A forged row at the end, hashed by the documented formula but
        // linked to row 2 (copied from a real one).
        let prev = hash_of(&store, 2).await;
        let fields = ChainFields {
            id: 6,
            at: 1,
            actor: "cz-psb",
            action: "DELIVERY",
            sequence: None,
            sender: "",
            notification_id: "",
            outcome: "FULL",
            reason: "",
            peer: "",
        };
        let hash = row_hash(&prev, &fields);
        sqlx::query(
            "INSERT INTO audit_log (id, at, agency, action, sequence, sender, notification_id, \
             decision, reason, peer, prev_hash, hash) \
             VALUES (6, 1, 'cz-psb', 'DELIVERY', NULL, '', '', 'FULL', '', '', $1, $2)",
        )
        .bind(&prev)
        .bind(hash.to_vec())
        .execute(store.pool())
        .await
        .unwrap();
        let report = verify(&store, &AuditVerifyOptions::default()).await;
        assert_eq!(
            first(&report),
            (Tampering::Inserted, Some(6)),
            "{:?}: {report:?}",
            store.backend()
        );
        // A row written by plain SQL, with no hash at all, is inserted too.
        exec(
            &store,
            "INSERT INTO audit_log (id, at, agency, action, sequence, sender, notification_id, decision, reason) \
             VALUES (7, 1, 'cz-psb', 'DELIVERY', NULL, '', '', 'FULL', '')",
        )
        .await;
        let report = verify(&store, &AuditVerifyOptions::default()).await;
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.kind == Tampering::Inserted && p.row == Some(7)),
            "{report:?}"
        );
    }
}

#[tokio::test]
async fn audit_chain_detects_reordered_rows() {
    for (store, _guard) in backends().await {
        append(&store, 5).await;
        drop_triggers(&store).await;
        exec(&store, "UPDATE audit_log SET id = 100 WHERE id = 2").await;
        exec(&store, "UPDATE audit_log SET id = 2 WHERE id = 3").await;
        exec(&store, "UPDATE audit_log SET id = 3 WHERE id = 100").await;
        let report = verify(&store, &AuditVerifyOptions::default()).await;
        assert_eq!(
            first(&report),
            (Tampering::Reordered, Some(2)),
            "{:?}: {report:?}",
            store.backend()
        );
    }
}

#[tokio::test]
async fn audit_chain_detects_truncation_after_checkpoint() {
    for (store, _guard) in backends().await {
        let key = Arc::new(GatewayKey::generate());
        append(&store, 5).await;
        let checkpoint = store.audit_checkpoint(key.clone()).await.unwrap().unwrap();
        assert_eq!(checkpoint.row_id, 5);
        append(&store, 2).await;
        drop_triggers(&store).await;
        // The tail goes, and the recorded head is set back to hide it.
        exec(&store, "DELETE FROM audit_log WHERE id > 3").await;
        let head = hash_of(&store, 3).await;
        sqlx::query("UPDATE audit_state SET last_id = 3, last_hash = $1")
            .bind(&head)
            .execute(store.pool())
            .await
            .unwrap();
        let options = AuditVerifyOptions {
            public_key: Some(key.public_key()),
            ..AuditVerifyOptions::default()
        };
        let report = verify(&store, &options).await;
        assert_eq!(
            first(&report),
            (Tampering::Truncated, Some(4)),
            "{:?}: {report:?}",
            store.backend()
        );
        assert!(
            report.problems[0]
                .detail
                .contains("checkpoint covers row 5"),
            "{report:?}"
        );
        // With the stored checkpoints gone too, the copy the operator
        // kept still shows it.
        exec(&store, "DELETE FROM audit_checkpoints").await;
        let report = verify(&store, &options).await;
        assert!(
            !report
                .problems
                .iter()
                .any(|p| p.kind == Tampering::Truncated),
            "nothing left in the database shows it: {report:?}"
        );
        let kept = Checkpoint::from_json(&checkpoint.to_json()).unwrap();
        let report = verify(
            &store,
            &AuditVerifyOptions {
                checkpoint_file: Some(("kept.json".into(), kept)),
                ..options.clone()
            },
        )
        .await;
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.kind == Tampering::Truncated && p.detail.contains("kept.json")),
            "{report:?}"
        );
    }
}

#[tokio::test]
async fn audit_verify_reports_dropped_trigger() {
    for (store, _guard) in backends().await {
        append(&store, 2).await;
        let dropped = match store.backend() {
            Backend::Sqlite => {
                exec(&store, "DROP TRIGGER audit_log_no_delete").await;
                "audit_log_no_delete"
            }
            Backend::Postgres => {
                exec(&store, "DROP TRIGGER audit_log_no_change ON audit_log").await;
                "audit_log_no_change"
            }
        };
        let report = verify(&store, &AuditVerifyOptions::default()).await;
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert_eq!(first(&report), (Tampering::Trigger, None));
        assert!(report.problems[0].detail.contains(dropped), "{report:?}");
        assert!(!report.triggers.iter().any(|t| t == dropped));
        if store.backend() == Backend::Postgres {
            // A disabled trigger protects nothing either.
            exec(
                &store,
                "ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_no_change",
            )
            .await;
            let report = verify(&store, &AuditVerifyOptions::default()).await;
            assert!(
                report
                    .problems
                    .iter()
                    .any(|p| p.detail.contains("audit_checkpoints_no_change")),
                "{report:?}"
            );
        }
    }
}

#[tokio::test]
async fn checkpoint_signature_verifies() {
    for (store, _guard) in backends().await {
        let key = Arc::new(GatewayKey::generate());
        let other = GatewayKey::generate();
        assert_eq!(
            store.audit_checkpoint(key.clone()).await.unwrap(),
            None,
            "an empty log"
        );
        append(&store, 3).await;
        assert_eq!(store.audit_rows_since_checkpoint().await.unwrap(), 3);
        let checkpoint = store.audit_checkpoint(key.clone()).await.unwrap().unwrap();
        assert_eq!(store.audit_rows_since_checkpoint().await.unwrap(), 0);
        assert_eq!(
            (checkpoint.row_id, &checkpoint.key_id),
            (3, &key.key_id().to_owned())
        );
        assert_eq!(checkpoint.row_hash, hash_of(&store, 3).await);
        assert!(checkpoint.signature_verifies(&key.public_key()));
        assert!(!checkpoint.signature_verifies(&other.public_key()));
        let mut moved = checkpoint.clone();
        moved.row_id = 2;
        assert!(
            !moved.signature_verifies(&key.public_key()),
            "the signature pins the row"
        );
        assert_eq!(
            Checkpoint::from_json(&checkpoint.to_json()).unwrap(),
            checkpoint
        );
        assert_eq!(
            store.latest_audit_checkpoint().await.unwrap(),
            Some(checkpoint)
        );
        // Nothing new: no second checkpoint.
        assert_eq!(store.audit_checkpoint(key.clone()).await.unwrap(), None);

        let options = AuditVerifyOptions {
            public_key: Some(key.public_key()),
            ..AuditVerifyOptions::default()
        };
        let report = verify(&store, &options).await;
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.checkpoints[0].signature_valid, Some(true));
        assert!(report.checkpoints[0].matches);

        // A checkpoint signed with another key is reported.
        append(&store, 1).await;
        let forged = Checkpoint::sign(&other, 4, hash_of(&store, 4).await, 1);
        sqlx::query(
            "INSERT INTO audit_checkpoints (row_id, row_hash, at, key_id, signature) VALUES (4, $1, 1, $2, $3)",
        )
        .bind(&forged.row_hash)
        .bind(&forged.key_id)
        .bind(&forged.signature)
        .execute(store.pool())
        .await
        .unwrap();
        let report = verify(&store, &options).await;
        assert_eq!(
            first(&report),
            (Tampering::Checkpoint, Some(4)),
            "{report:?}"
        );
        assert_eq!(report.checkpoints[0].signature_valid, Some(false));
        // And the checkpoint table refuses changes while its triggers stand.
        let delete = sqlx::query("DELETE FROM audit_checkpoints")
            .execute(store.pool())
            .await;
        assert!(delete.is_err(), "{:?}", store.backend());
    }
}

#[tokio::test]
async fn concurrent_appends_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    )];
    urls.extend(postgres_schema_url().await);
    for url in urls {
        // Two stores: two writers, as two replicas (or processes) have.
        let first = Store::connect(&url, 2).await.unwrap();
        let second = Store::connect(&url, 2).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..40_u64 {
            let store = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tasks.push(tokio::spawn(async move {
                store.append_audit(&[entry(i), entry(i + 100)]).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let report = verify(&first, &AuditVerifyOptions::default()).await;
        assert!(report.is_clean(), "{:?}: {report:?}", first.backend());
        assert_eq!(report.rows_checked, 80);
        assert_eq!(report.last_id, Some(80), "ids are gap-free");
        first.close().await;
        second.close().await;
    }
}

#[tokio::test]
async fn audit_rows_from_before_the_chain_are_linked_once_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    )];
    urls.extend(postgres_schema_url().await);
    for url in urls {
        let store = Store::connect(&url, 2).await.unwrap();
        // As the migration leaves a log that had rows: no links, no head.
        exec(
            &store,
            "INSERT INTO audit_log (id, at, agency, action, sequence, sender, notification_id, decision, reason) \
             VALUES (1, 10, 'cz-psb', 'DELIVERY', 1, 'cz-eeb', 'n1', 'FULL', 'recipient'), \
                    (2, 20, 'cz-psb', 'CASE_READ', 1, 'cz-eeb', 'n1', 'FULL', 'recipient')",
        )
        .await;
        exec(
            &store,
            "UPDATE audit_state SET last_id = 2, last_hash = NULL",
        )
        .await;
        store.close().await;
        let store = Store::connect(&url, 2).await.unwrap();
        let report = verify(&store, &AuditVerifyOptions::default()).await;
        assert!(report.is_clean(), "{:?}: {report:?}", store.backend());
        assert_eq!(report.rows_checked, 2);
        store.append_audit(&[entry(3)]).await.unwrap();
        assert!(
            verify(&store, &AuditVerifyOptions::default())
                .await
                .is_clean()
        );
        // Linking was the one change allowed, once: a link cannot be
        // removed or rewritten, nor a linked row edited.
        for sql in [
            "UPDATE audit_log SET hash = NULL, prev_hash = NULL WHERE id = 1",
            "UPDATE audit_log SET hash = prev_hash WHERE id = 2",
            "UPDATE audit_log SET reason = 'forged' WHERE id = 1",
        ] {
            let update = sqlx::query(sql).execute(store.pool()).await;
            assert!(
                update.is_err(),
                "{:?}: {sql} must be refused",
                store.backend()
            );
        }
        store.close().await;
    }
}

#[tokio::test]
async fn publishes_and_moved_cursors_are_audited_in_their_transaction() {
    for (store, _guard) in backends().await {
        let new = crate::store::tests::new_notification("cz-eeb", "n1", "C-1", "x")
            .from_peer(Some(std::net::SocketAddr::from(([10, 0, 0, 7], 5000))));
        store.publish(&new).await.unwrap();
        // A duplicate answered from the store writes no row.
        store.publish(&new).await.unwrap();
        store
            .open_subscription("cz-psb", "inbox", b"", 0)
            .await
            .unwrap();
        store
            .advance_subscription("cz-psb", "inbox", 1, None)
            .await
            .unwrap();
        // Not moved: no row.
        store
            .advance_subscription("cz-psb", "inbox", 1, None)
            .await
            .unwrap();
        let entries = store.audit_entries().await.unwrap();
        let actions: Vec<&str> = entries.iter().map(|e| e.action).collect();
        assert_eq!(actions, ["PUBLISHED", "ACK"], "{:?}", store.backend());
        assert_eq!(entries[0].notification_id, "n1");
        assert_eq!(entries[0].sequence, Some(1));
        assert_eq!(entries[0].peer, new.peer);
        assert_eq!(entries[1].reason, "subscription inbox: 0 -> 1");
        assert!(
            verify(&store, &AuditVerifyOptions::default())
                .await
                .is_clean()
        );

        // A publish whose audit row cannot be written stores nothing.
        match store.backend() {
            Backend::Sqlite => {
                exec(
                    &store,
                    "CREATE TRIGGER refuse_published BEFORE INSERT ON audit_log \
                 WHEN NEW.action = 'PUBLISHED' BEGIN SELECT RAISE(ABORT, 'audit disk gone'); END",
                )
                .await
            }
            Backend::Postgres => {
                exec(
                    &store,
                    "CREATE FUNCTION refuse_published() RETURNS trigger AS $$ BEGIN \
                     IF NEW.action = 'PUBLISHED' THEN RAISE EXCEPTION 'audit disk gone'; END IF; \
                     RETURN NEW; END; $$ LANGUAGE plpgsql",
                )
                .await;
                exec(
                    &store,
                    "CREATE TRIGGER refuse_published BEFORE INSERT ON audit_log \
                     FOR EACH ROW EXECUTE FUNCTION refuse_published()",
                )
                .await;
            }
        }
        let refused = crate::store::tests::new_notification("cz-eeb", "n2", "C-1", "y");
        assert!(
            store.publish(&refused).await.is_err(),
            "{:?}",
            store.backend()
        );
        assert_eq!(store.count_notifications().await.unwrap(), 1);
        assert_eq!(store.latest_sequence().await.unwrap(), 1);
        assert_eq!(store.audit_entries().await.unwrap().len(), 2);
    }
}
