//! The listener hears another process's commits on its own schema's
//! channel, not its own writer's, nor another schema's; on SQLite there is
//! nothing to hear.

use std::time::Duration;

use super::super::listen::{self, Heard};
use super::*;

/// Long enough for an announcement on loopback, even on a loaded machine.
const HEAR: Duration = Duration::from_secs(10);
/// How long silence is awaited.
const QUIET: Duration = Duration::from_millis(500);

#[tokio::test]
async fn the_insert_announces_on_the_stored_channel() {
    assert!(INSERT_NOTIFICATION_POSTGRES.contains(&listen::announce(listen::STORED)));
}

#[tokio::test]
async fn another_process_commit_is_heard_once_and_the_own_writer_is_not() {
    for (store, _guard) in backends().await {
        let listener = store.listen(&[listen::STORED]).await.unwrap();
        if store.backend() == Backend::Sqlite {
            assert!(
                listener.is_none(),
                "SQLite has one process: nothing to hear"
            );
            continue;
        }
        let mut listener = listener.unwrap();
        // This process's own publish: its sessions were woken already.
        store
            .publish(&new_notification("cz-eeb", "own", "C-1", "own"))
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(QUIET, listener.next()).await.is_err(),
            "the own writer's announcement is passed over"
        );
        // Another replica on the same schema: ten publishes in one
        // transaction are one announcement.
        let other = Store::connect(&store.shared.url, 2).await.unwrap();
        let news: Vec<_> = (0..10)
            .map(|n| new_notification("cz-eeb", &format!("o{n}"), "C-1", "x"))
            .collect();
        let publishes: Vec<_> = news.iter().map(|new| other.publish(new)).collect();
        futures::future::try_join_all(publishes).await.unwrap();
        let heard = tokio::time::timeout(HEAR, listener.next())
            .await
            .expect("another replica's commit is heard")
            .unwrap();
        assert_eq!(heard, Heard::Channel(listen::STORED.to_owned()));
        // A store in another schema of the same database is not heard.
        let elsewhere = Store::connect(&postgres_schema_url().await.unwrap(), 2)
            .await
            .unwrap();
        elsewhere
            .publish(&new_notification("cz-eeb", "e", "C-1", "e"))
            .await
            .unwrap();
        // Whatever of the other replica's publishes was not folded into
        // the first announcement may still come; nothing else may.
        while let Ok(heard) = tokio::time::timeout(QUIET, listener.next()).await {
            assert_eq!(heard.unwrap(), Heard::Channel(listen::STORED.to_owned()));
        }
        other.close().await;
        elsewhere.close().await;
    }
}

#[tokio::test]
async fn a_cut_listener_says_so_and_hears_again() {
    for (store, _guard) in backends().await {
        let Some(mut listener) = store.listen(&[listen::STORED]).await.unwrap() else {
            continue;
        };
        let mut admin = sqlx::AnyConnection::connect(&store.shared.url)
            .await
            .unwrap();
        let cut: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN %' \
             AND query LIKE '%' || left(md5(current_schema()), 16) || '%'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(cut, 1, "one listening connection on this schema");
        let heard = tokio::time::timeout(HEAR, listener.next())
            .await
            .expect("the cut is noticed")
            .unwrap();
        assert_eq!(heard, Heard::Reconnected);
        let other = Store::connect(&store.shared.url, 2).await.unwrap();
        other
            .publish(&new_notification("cz-eeb", "after", "C-1", "after"))
            .await
            .unwrap();
        let heard = tokio::time::timeout(HEAR, listener.next())
            .await
            .expect("heard after the reconnection")
            .unwrap();
        assert_eq!(heard, Heard::Channel(listen::STORED.to_owned()));
        other.close().await;
    }
}
