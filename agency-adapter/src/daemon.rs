//! `liandong-adapter run`: the daemon. [`Daemon::prepare`] loads and checks
//! everything that can be wrong before any work starts (signing key, TLS
//! files, sinks, folders, the state file and its lease, the HTTP address);
//! [`Daemon::run`] starts the tasks — the pusher, each source, each
//! subscription, the dead-letter reporter, the heartbeat — and stops them
//! all when the shutdown future completes (SIGTERM/SIGINT in `main`):
//! sources stop taking notifications, the pusher waits briefly for its
//! last receipts, subscriptions close after their last acknowledgements,
//! the lease is released and the state file closed, and last the daemon
//! lock is let go.
//!
//! Whatever is cut short is safe: accepted rows stay in the outbox and are
//! sent at the next start.
//!
//! Its parts, each one task or one step of one:
//! - [`accept`] — the one acceptance path every source uses: check,
//!   identify, sign, commit.
//! - [`source`] — the drop folder and the local HTTP endpoint.
//! - [`pusher`] — the outbox over one `PublishStream`, receipts, retries,
//!   dead letters.
//! - [`inbound`] — subscriptions verified and handed to sinks,
//!   acknowledged after.
//! - [`sink`] — webhook, folder and stdout sinks; the dead-letter reporter.
//! - [`backoff`] — exponential backoff with jitter.
//! - [`disabled`] — the gateway's refusal of a disabled agency, which
//!   both the pusher and the subscriptions wait out.
//!
//! The daemon and its parts never use the one-shot commands
//! ([`crate::commands`]), never listen for signals themselves (the
//! shutdown future is handed in) and never log content.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use liandong_core::registry::RegistryError;
use liandong_core::tls::{ClientCredentials, TlsError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::daemon::{DaemonConfig, OnFailure, SourceSettings};
use crate::error::exit;
use crate::report::Limits;
use crate::signer::{Signer, SignerError};
use crate::store::{DaemonLock, Store, StoreError};

use accept::Acceptor;
use inbound::Inbound;
use inbound::verify::Verifier;
use pusher::Pusher;
use sink::{Sink, SinkError, report_dead_letters};
use source::{folder, http};

pub mod accept;
pub mod backoff;
pub mod disabled;
pub mod inbound;
pub mod pusher;
pub mod sink;
pub mod source;

#[cfg(test)]
mod tests;

/// How often the daemon records that it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long stopping may take before the remaining tasks are abandoned.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// How often sent rows past `outbox.keep_sent_days` are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Why the daemon cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The signing key is unusable.
    #[error(transparent)]
    Signing(#[from] SignerError),
    /// A TLS credential file is unusable.
    #[error(transparent)]
    Credentials(TlsError),
    /// A sink cannot be set up.
    #[error("{field}: {source}")]
    Sink {
        /// Which sink, e.g. `subscription[0].sink`.
        field: String,
        /// What is wrong.
        source: SinkError,
    },
    /// A drop folder (or its `done/`, `rejected/`) cannot be created, or
    /// is not the adapter's own (a symbolic link, another owner, writable
    /// by others).
    #[error("{path}: cannot use the drop folder: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state file cannot be used, or another daemon holds it.
    #[error(transparent)]
    State(#[from] StoreError),
    /// The HTTP source's token file is unusable.
    #[error("source http: {0}")]
    Token(#[from] http::TokenError),
    /// The `[verify]` registry is unusable.
    #[error("verify.registry: {0}")]
    Verify(RegistryError),
    /// A subscription's `rejected` folder cannot be created.
    #[error("{path}: cannot create the rejected folder: {source}")]
    Rejected {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP source's address cannot be bound.
    #[error("cannot listen on {addr} (source http): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl DaemonError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Signing(_) | Self::Credentials(_) | Self::Token(_) | Self::Verify(_) => {
                exit::USAGE
            }
            Self::Sink {
                source: SinkError::Setup(_),
                ..
            } => exit::USAGE,
            Self::Sink { .. } | Self::Folder { .. } | Self::Rejected { .. } => exit::CANT_CREATE,
            Self::State(StoreError::AlreadyRunning { .. }) => exit::TEMPFAIL,
            Self::State(_) => exit::CANT_CREATE,
            Self::Bind { .. } => exit::OS,
        }
    }
}

/// A daemon ready to run.
#[derive(Debug)]
pub struct Daemon {
    config: DaemonConfig,
    store: Store,
    /// Keeps any other daemon off the state file until this one ends.
    lock: DaemonLock,
    signer: Arc<Signer>,
    http: Option<(tokio::net::TcpListener, http::Guard)>,
    sinks: Vec<Arc<Sink>>,
    dead_letter_sink: Option<Arc<Sink>>,
    verifier: Option<Arc<Verifier>>,
}

impl Daemon {
    /// Checks and opens everything `config` names; takes the state file's
    /// lease and binds the HTTP source.
    pub async fn prepare(config: DaemonConfig) -> Result<Self, DaemonError> {
        let signer = Arc::new(Signer::load(config.agency.clone(), &config.signing_key)?);
        ClientCredentials::from_files(
            &config.gateway.ca,
            &config.gateway.cert,
            &config.gateway.key,
        )
        .map_err(DaemonError::Credentials)?;
        let token = match config.http_source() {
            Some(source) => Some(http::HttpToken::load(&source.token_file)?),
            None => None,
        };
        let mut sinks = Vec::new();
        for (i, subscription) in config.subscriptions.iter().enumerate() {
            let sink = Sink::build(&subscription.sink).map_err(|source| DaemonError::Sink {
                field: format!("subscription[{i}].sink"),
                source,
            })?;
            sinks.push(Arc::new(sink));
        }
        let dead_letter_sink = match &config.dead_letter_sink {
            Some(settings) => Some(Arc::new(Sink::build(settings).map_err(|source| {
                DaemonError::Sink {
                    field: "dead_letter.sink".into(),
                    source,
                }
            })?)),
            None => None,
        };
        let verifier = match &config.verify {
            Some(settings) => {
                let verifier = Verifier::load(settings).map_err(DaemonError::Verify)?;
                if settings.on_failure == OnFailure::Reject {
                    for subscription in &config.subscriptions {
                        inbound::prepare_rejected(&subscription.rejected).map_err(|source| {
                            DaemonError::Rejected {
                                path: subscription.rejected.clone(),
                                source,
                            }
                        })?;
                    }
                }
                Some(Arc::new(verifier))
            }
            None => {
                if !config.subscriptions.is_empty() {
                    tracing::warn!(
                        "no [verify] table: the signatures of deliveries are not verified; \
                         add [verify] registry = \"<registry file>\" to prove who sent what"
                    );
                }
                None
            }
        };
        for source in &config.sources {
            if let SourceSettings::Folder(folder) = source {
                folder::prepare(folder).map_err(|source| DaemonError::Folder {
                    path: folder.path.clone(),
                    source,
                })?;
            }
        }
        let store = Store::open(&config.outbox.path).await?;
        let lock = store.claim_daemon(std::process::id()).await?;
        let http = match (config.http_source(), token) {
            (Some(source), Some(token)) => {
                let addr = source.listen;
                match tokio::net::TcpListener::bind(addr)
                    .await
                    .and_then(|l| l.local_addr().map(|bound| (l, bound)))
                {
                    Ok((listener, bound)) => {
                        let guard =
                            http::Guard::new(token, bound, source.public_address.as_deref());
                        Some((listener, guard))
                    }
                    Err(source) => {
                        let _ = store.release_daemon().await;
                        return Err(DaemonError::Bind { addr, source });
                    }
                }
            }
            _ => None,
        };
        Ok(Self {
            config,
            store,
            lock,
            signer,
            http,
            sinks,
            dead_letter_sink,
            verifier,
        })
    }

    /// The HTTP source's bound address, if it has one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The agency's signing key id.
    pub fn key_id(&self) -> &str {
        self.signer.key_id()
    }

    /// Runs until `shutdown` completes, then stops every task.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self {
            config,
            store,
            lock,
            signer,
            http,
            sinks,
            dead_letter_sink,
            verifier,
        } = self;
        crate::report::log_certificate(
            &config.gateway.cert,
            liandong_core::domain::Instant::now().unix_micros(),
        );
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let wake = Arc::new(Notify::new());
        let dead_letter = Arc::new(Notify::new());
        let acceptor = Acceptor::new(
            store.clone(),
            signer,
            config.outbox.max_pending,
            config.outbox.max_notification_bytes,
            Arc::clone(&wake),
        );
        tasks.spawn(housekeeping(
            store.clone(),
            config.outbox.keep_sent,
            stop.clone(),
        ));
        tasks.spawn(
            Pusher {
                store: store.clone(),
                gateway: config.gateway.clone(),
                outbox: config.outbox.clone(),
                wake,
                dead_letter: Arc::clone(&dead_letter),
            }
            .run(stop.clone()),
        );
        for source in &config.sources {
            if let SourceSettings::Folder(folder) = source {
                tasks.spawn(folder::run(folder.clone(), acceptor.clone(), stop.clone()));
            }
        }
        if let Some((listener, guard)) = http {
            let max_body =
                (config.outbox.max_notification_bytes.saturating_mul(4) as usize).max(64 * 1024);
            let router = http::router(
                acceptor.clone(),
                Limits::from(&config),
                Some(config.gateway.cert.clone()),
                max_body,
                guard,
            );
            tasks.spawn(http::serve(listener, router, stop.clone()));
        }
        for (subscription, sink) in config.subscriptions.iter().zip(sinks) {
            tasks.spawn(
                Inbound {
                    store: store.clone(),
                    gateway: config.gateway.clone(),
                    settings: subscription.clone(),
                    sink,
                    verifier: verifier.clone(),
                }
                .run(stop.clone()),
            );
        }
        if let Some(sink) = dead_letter_sink {
            tasks.spawn(report_dead_letters(
                store.clone(),
                sink,
                dead_letter,
                stop.clone(),
            ));
        }
        tasks.close();
        tracing::info!(agency.id = %config.agency, "running");
        shutdown.await;
        tracing::info!("stopping");
        stop.cancel();
        if tokio::time::timeout(STOP_GRACE, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "some tasks did not stop in time; what they held is resumed at the next start"
            );
        }
        if let Err(error) = store.release_daemon().await {
            tracing::error!(error = %error, "cannot record the stop");
        }
        store.close().await;
        drop(lock);
        tracing::info!("stopped");
    }
}

/// The heartbeat, and forgetting old sent rows.
async fn housekeeping(store: Store, keep_sent: Duration, stop: CancellationToken) {
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        if let Err(error) = store.heartbeat().await {
            tracing::error!(error = %error, "cannot record the heartbeat");
        }
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            match store.prune_sent(keep_sent).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    rows = n,
                    "forgot sent notifications past outbox.keep_sent_days"
                ),
                Err(error) => tracing::error!(error = %error, "cannot prune sent rows"),
            }
            last_prune = Some(tokio::time::Instant::now());
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}
