//! What other gateway replicas wrote, heard through PostgreSQL
//! `LISTEN/NOTIFY`.
//!
//! Every transaction that stores a notification also announces it on the
//! channel [`STORED`] (`pg_notify`); PostgreSQL delivers that once the
//! transaction committed (once per transaction, however many rows it
//! stored), to every session listening on that channel. Channels are
//! database-wide, so each is named for the schema the store lives in
//! ([`scoped`]): stores in other schemas of the same database are not
//! heard. A [`Listener`]
//! is such a session, on a connection of its own: it tells its process
//! that another replica stored something, so that the sessions it
//! concerns are woken within milliseconds instead of at the next poll.
//! The writer's own notifications are passed over (the process woke its
//! sessions itself when it stored them).
//!
//! A notification is only a hint: nothing is read from it, and one that is
//! lost (the listener's connection dropped, or was not up yet) only
//! delays — the poll (`delivery.poll_interval_ms`) still finds every row.
//! When the connection drops, the listener says so ([`Heard::Reconnected`])
//! so that its process looks at once for what it may have missed.
//!
//! On SQLite there is one process and nothing to hear: [`Store::listen`]
//! returns `None`.

use sqlx::postgres::PgListener;

use super::{Backend, Store, StoreError};

/// The channel on which a stored notification is announced.
pub const STORED: &str = "liandong_stored";

/// The channel on which a request to take over a subscription's lease is
/// announced (`store::leases`).
pub const LEASES: &str = "liandong_leases";

/// The SQL expression naming `channel` for the store's schema: the
/// channel, `_`, and 16 hex digits of the MD5 of the schema's name (a
/// channel name must stay under 64 bytes, whatever the schema's).
/// `channel` is one of this module's constants.
pub(crate) fn scoped(channel: &str) -> String {
    format!("'{channel}_' || left(md5(current_schema()), 16)")
}

/// The SQL expression announcing on `channel` (`pg_notify`), text-typed.
pub(crate) fn announce(channel: &str) -> String {
    format!("pg_notify({}, '')::text", scoped(channel))
}

/// A connection listening on some channels.
pub struct Listener {
    inner: PgListener,
    /// Each channel and the name it has for this store's schema.
    names: Vec<(String, String)>,
    store: Store,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

/// What a listener heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Another process announced something on this channel.
    Channel(String),
    /// The connection was lost and made again: whatever was announced
    /// meanwhile was not heard.
    Reconnected,
}

impl Store {
    /// A listener on `channels`, on a connection of its own; `None` on
    /// SQLite (one process, nothing to hear).
    pub async fn listen(&self, channels: &[&str]) -> Result<Option<Listener>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut inner = PgListener::connect(&self.shared.url).await?;
        let mut names = Vec::with_capacity(channels.len());
        for channel in channels {
            let name: String = sqlx::query_scalar(&format!("SELECT {}", scoped(channel)))
                .fetch_one(&mut inner)
                .await?;
            names.push(((*channel).to_owned(), name));
        }
        inner
            .listen_all(names.iter().map(|(_, name)| name.as_str()))
            .await?;
        Ok(Some(Listener {
            inner,
            names,
            store: self.clone(),
        }))
    }
}

impl Listener {
    /// Waits for the next announcement from another process, or for the
    /// connection to be lost (then made again before this returns). An
    /// error means it could not be made again; the next call tries anew.
    pub async fn next(&mut self) -> Result<Heard, StoreError> {
        loop {
            match self.inner.try_recv().await? {
                None => return Ok(Heard::Reconnected),
                Some(heard) => {
                    if heard.process_id() == self.store.shared.writer.backend_pid() {
                        continue;
                    }
                    if let Some((channel, _)) =
                        self.names.iter().find(|(_, name)| name == heard.channel())
                    {
                        return Ok(Heard::Channel(channel.clone()));
                    }
                }
            }
        }
    }
}
