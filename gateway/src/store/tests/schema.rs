//! Schema compatibility across one version: a store migrated ahead of this
//! binary (a rolling upgrade, another replica already on the next version)
//! is opened and served; a store behind is migrated. On both backends.

use super::*;

/// The database URLs of a fresh store per backend (SQLite in `dir`).
async fn urls(dir: &tempfile::TempDir) -> Vec<String> {
    let mut urls = vec![format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    )];
    urls.extend(postgres_schema_url().await);
    urls
}

#[tokio::test]
async fn store_ahead_by_unknown_migrations_opens_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    for url in urls(&dir).await {
        let store = Store::connect(&url, 2).await.unwrap();
        store
            .publish(&new_notification("cz-eeb", "before", "C-1", "before"))
            .await
            .unwrap();
        apply_future_migration(&store, 9999).await;
        store.close().await;

        // Refused before (sqlx: "migration 9999 was previously applied but
        // is missing in the resolved migrations"); now opened.
        let store = Store::connect(&url, 2)
            .await
            .unwrap_or_else(|error| panic!("{url}: a store one version ahead must open: {error}"));
        let unknown = unknown_migrations(store.pool(), store.backend())
            .await
            .unwrap();
        assert_eq!(
            describe_migrations(&unknown),
            "9999 (from the future)",
            "{url}"
        );
        let PublishOutcome::Stored(receipt) = store
            .publish(&new_notification("cz-eeb", "after", "C-1", "after"))
            .await
            .unwrap()
        else {
            panic!("{url}: a publish on a store ahead must be stored");
        };
        assert_eq!(receipt.sequence, 2, "{url}");
        assert_eq!(store.read_after(0, 10).await.unwrap().rows.len(), 2);
        assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
        store.close().await;
    }
}

#[tokio::test]
async fn store_behind_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    for url in urls(&dir).await {
        let store = Store::connect(&url, 2).await.unwrap();
        let last = migrator(store.backend()).iter().last().unwrap().version;
        assert_eq!(last, 13, "the statements below undo the last migration");
        // As a store of the version before the last migration left it.
        let mut statements = vec![
            "DROP TABLE sequence_fences",
            "DROP TABLE store_copies",
            "DELETE FROM _sqlx_migrations WHERE version = 13",
        ];
        if store.backend() == Backend::Postgres {
            statements.push("DROP FUNCTION sequence_fences_append_only()");
        }
        for statement in statements {
            sqlx::query(statement).execute(store.pool()).await.unwrap();
        }
        store.close().await;

        let store = Store::connect(&url, 2).await.unwrap();
        let applied = applied_migrations(store.pool()).await.unwrap();
        assert_eq!(applied.last().map(|m| m.version), Some(last), "{url}");
        assert!(applied.iter().all(|m| m.success));
        assert!(store.fences().await.unwrap().is_empty(), "{url}");
        store.close().await;
    }
}
