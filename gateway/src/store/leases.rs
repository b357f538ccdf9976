//! Subscription leases (table `subscription_leases`): which gateway
//! process serves each durable subscription, so that one session of it
//! runs at a time across every replica on the database.
//!
//! A lease names its holder (a process's instance id), which of the
//! holder's acquisitions it is (`hold`), when it expires, and whether
//! another process asked to take it over. Expiry is judged on the
//! database's own clock, read inside the writing transaction, so the
//! replicas' clocks do not matter. Every write goes through the writer
//! (and so, on PostgreSQL, runs under the cross-replica locks every writer
//! transaction takes): two processes never decide on one lease at once.
//!
//! This module records and answers; what a session does about its lease
//! is `routing::lease`'s. It never reads or writes anything but
//! `subscription_leases`.

use std::time::Duration;

use sqlx::{AnyConnection, Row};

use super::{Backend, Store, StoreError, to_i64, to_u64};

#[cfg(test)]
mod tests;

/// The PostgreSQL notification channel a takeover request is announced
/// on, at its commit (named for the store's schema, see `store::listen`).
pub const TAKEOVER_CHANNEL: &str = super::listen::LEASES;

/// Holds renewed per statement: bounds the statement's parameters.
const RENEW_CHUNK: usize = 500;

/// What an acquisition found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The caller holds the lease now, under the hold it gave.
    Acquired {
        /// The process whose expired lease was taken over; `None` when the
        /// lease was free or already the caller's.
        expired_holder: Option<String>,
    },
    /// Another process holds the lease and it has not expired; the
    /// caller's takeover request is recorded (and, on PostgreSQL,
    /// announced on [`TAKEOVER_CHANNEL`] at commit).
    Held {
        /// The holding process.
        holder: String,
        /// How long until the lease expires unless renewed.
        expires_in: Duration,
    },
}

/// A lease as it stands, read from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The holding process.
    pub holder: String,
    /// Which of its acquisitions.
    pub hold: u64,
    /// Microseconds until it expires on the database's clock (zero or
    /// less: expired).
    pub expires_in_micros: i64,
    /// The process that asked to take it over, if any.
    pub takeover_by: Option<String>,
}

impl LeaseState {
    /// True once the lease has expired: anyone may take it.
    pub fn expired(&self) -> bool {
        self.expires_in_micros <= 0
    }
}

/// One of a process's leases after a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewed {
    /// The hold renewed.
    pub hold: u64,
    /// Another process asked to take it over.
    pub takeover_requested: bool,
}

/// The database clock now, in microseconds since the Unix epoch, as a SQL
/// expression.
pub(crate) fn now_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

impl Store {
    /// Acquires `owner`'s subscription `name` for process `instance` as
    /// its hold number `hold`, for `duration` on the database's clock: a
    /// free lease, an expired one, or one `instance` holds already (its
    /// hold number then becomes `hold`, and a pending takeover request is
    /// dropped). A lease another process holds is not taken: the request
    /// to hand it over is recorded instead.
    pub async fn acquire_lease(
        &self,
        owner: &str,
        name: &str,
        instance: &str,
        hold: u64,
        duration: Duration,
    ) -> Result<Acquire, StoreError> {
        let (owner, name, instance) = (owner.to_owned(), name.to_owned(), instance.to_owned());
        let backend = self.backend;
        self.write("acquire_lease", move |conn| {
            Box::pin(async move {
                let now = db_now(conn, backend).await?;
                let expires_at = now.saturating_add(micros(duration));
                let current = state_in(conn, backend, &owner, &name).await?;
                let expired_holder = match current {
                    None => {
                        sqlx::query(
                            "INSERT INTO subscription_leases \
                             (owner, name, holder, hold, acquired_at, expires_at) \
                             VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind(&owner)
                        .bind(&name)
                        .bind(&instance)
                        .bind(to_i64(hold))
                        .bind(now)
                        .bind(expires_at)
                        .execute(&mut *conn)
                        .await?;
                        return Ok(Acquire::Acquired {
                            expired_holder: None,
                        });
                    }
                    Some(state) if state.holder == instance => None,
                    Some(state) if state.expired() => Some(state.holder),
                    Some(state) => {
                        sqlx::query(
                            "UPDATE subscription_leases SET takeover_by = $1, takeover_at = $2 \
                             WHERE owner = $3 AND name = $4",
                        )
                        .bind(&instance)
                        .bind(now)
                        .bind(&owner)
                        .bind(&name)
                        .execute(&mut *conn)
                        .await?;
                        if backend == Backend::Postgres {
                            // Delivered when the transaction commits.
                            sqlx::query(&format!(
                                "SELECT {}",
                                super::listen::announce(TAKEOVER_CHANNEL)
                            ))
                            .execute(&mut *conn)
                            .await?;
                        }
                        return Ok(Acquire::Held {
                            holder: state.holder,
                            expires_in: Duration::from_micros(
                                u64::try_from(state.expires_in_micros).unwrap_or(0),
                            ),
                        });
                    }
                };
                // The holder's own lease keeps the time it was first
                // acquired; an expired one taken over starts anew.
                sqlx::query(
                    "UPDATE subscription_leases SET holder = $1, hold = $2, \
                     acquired_at = CASE WHEN holder = $1 THEN acquired_at ELSE $3 END, \
                     expires_at = $4, takeover_by = NULL, takeover_at = NULL \
                     WHERE owner = $5 AND name = $6",
                )
                .bind(&instance)
                .bind(to_i64(hold))
                .bind(now)
                .bind(expires_at)
                .bind(&owner)
                .bind(&name)
                .execute(&mut *conn)
                .await?;
                Ok(Acquire::Acquired { expired_holder })
            })
        })
        .await
    }

    /// Renews, in one write, the leases `instance` holds under `holds`
    /// until `duration` from now on the database's clock; returns those it
    /// still held (a lease another process took, or that was deleted, is
    /// not among them), each saying whether a takeover was asked for.
    pub async fn renew_leases(
        &self,
        instance: &str,
        holds: &[u64],
        duration: Duration,
    ) -> Result<Vec<Renewed>, StoreError> {
        if holds.is_empty() {
            return Ok(Vec::new());
        }
        let instance = instance.to_owned();
        let holds = holds.to_vec();
        let backend = self.backend;
        self.write("renew_leases", move |conn| {
            Box::pin(async move {
                let mut renewed = Vec::with_capacity(holds.len());
                for chunk in holds.chunks(RENEW_CHUNK) {
                    let placeholders = (3..3 + chunk.len())
                        .map(|i| format!("${i}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let sql = format!(
                        "UPDATE subscription_leases SET expires_at = {now} + $1 \
                         WHERE holder = $2 AND hold IN ({placeholders}) \
                         RETURNING hold, takeover_by",
                        now = now_sql(backend)
                    );
                    let mut query = sqlx::query(&sql).bind(micros(duration)).bind(&instance);
                    for hold in chunk {
                        query = query.bind(to_i64(*hold));
                    }
                    for row in query.fetch_all(&mut *conn).await? {
                        let takeover_by: Option<String> = row.try_get("takeover_by")?;
                        renewed.push(Renewed {
                            hold: to_u64(row.try_get("hold")?, "hold")?,
                            takeover_requested: takeover_by.is_some(),
                        });
                    }
                }
                Ok(renewed)
            })
        })
        .await
    }

    /// Releases `owner`'s subscription `name` if `instance` holds it under
    /// `hold`; true when it did. A lease another process took, or that the
    /// same process acquired again since, is left alone.
    pub async fn release_lease(
        &self,
        owner: &str,
        name: &str,
        instance: &str,
        hold: u64,
    ) -> Result<bool, StoreError> {
        self.queue_release_lease(owner, name, instance, hold).await
    }

    /// [`Store::release_lease`], queued to the writer at the call (so that
    /// it runs after every write queued before it) and run even if the
    /// returned future is dropped.
    pub(crate) fn queue_release_lease(
        &self,
        owner: &str,
        name: &str,
        instance: &str,
        hold: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + use<> {
        let (owner, name, instance) = (owner.to_owned(), name.to_owned(), instance.to_owned());
        self.write("release_lease", move |conn| {
            Box::pin(async move {
                let deleted = sqlx::query(
                    "DELETE FROM subscription_leases \
                     WHERE owner = $1 AND name = $2 AND holder = $3 AND hold = $4",
                )
                .bind(&owner)
                .bind(&name)
                .bind(&instance)
                .bind(to_i64(hold))
                .execute(&mut *conn)
                .await?
                .rows_affected();
                Ok(deleted == 1)
            })
        })
    }

    /// Deletes every lease, whoever holds it; returns how many there were.
    /// For SQLite at start, where one process serves the database and the
    /// leases left are a previous process's.
    pub async fn clear_leases(&self) -> Result<u64, StoreError> {
        self.write("clear_leases", move |conn| {
            Box::pin(async move {
                Ok(sqlx::query("DELETE FROM subscription_leases")
                    .execute(&mut *conn)
                    .await?
                    .rows_affected())
            })
        })
        .await
    }

    /// The holds of `instance` that another process asked to take over.
    /// One read on the pool, through the holder's index.
    pub async fn takeover_requests(&self, instance: &str) -> Result<Vec<u64>, StoreError> {
        let holds: Vec<i64> = sqlx::query_scalar(
            "SELECT hold FROM subscription_leases WHERE holder = $1 AND takeover_by IS NOT NULL",
        )
        .bind(instance)
        .fetch_all(&self.pool)
        .await?;
        holds.into_iter().map(|hold| to_u64(hold, "hold")).collect()
    }

    /// The lease of `owner`'s subscription `name`, if there is one
    /// (expired or not). A read on the pool.
    pub async fn lease(&self, owner: &str, name: &str) -> Result<Option<LeaseState>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        state_in(&mut conn, self.backend, owner, name).await
    }
}

/// The database clock now (microseconds since the Unix epoch).
async fn db_now(conn: &mut AnyConnection, backend: Backend) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(&format!("SELECT {}", now_sql(backend)))
        .fetch_one(&mut *conn)
        .await?)
}

/// The lease of `owner`'s subscription `name`, read on `conn`.
async fn state_in(
    conn: &mut AnyConnection,
    backend: Backend,
    owner: &str,
    name: &str,
) -> Result<Option<LeaseState>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT holder, hold, expires_at - {now} AS expires_in, takeover_by \
         FROM subscription_leases WHERE owner = $1 AND name = $2",
        now = now_sql(backend)
    ))
    .bind(owner)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(LeaseState {
            holder: row.try_get("holder")?,
            hold: to_u64(row.try_get("hold")?, "hold")?,
            expires_in_micros: row.try_get("expires_in")?,
            takeover_by: row.try_get("takeover_by")?,
        })
    })
    .transpose()
}
