//! The Liandong gateway: agencies publish case notifications over mutual-TLS
//! gRPC; the gateway proves who is talking, enforces confidentiality, stores
//! every notification durably and delivers it to entitled subscribers.
//!
//! # Layout
//! - [`config`]: the TOML configuration and its environment overrides.
//! - [`identity`]: TLS settings, the accept loop with per-connection
//!   handshake timeouts, and certificate → registered agency, resolved once
//!   per request.
//! - [`api`]: the `liandong.v1.Exchange` service handlers.
//! - [`admin`]: the `admin` command line over the Operations service.
//! - [`announcements`]: joint drafts, co-signers' answers and releases.
//! - [`disclosure`]: what a reader receives of a stored notification
//!   (render, redact, stub, contact) and its audit entry, for delivery and
//!   `GetCase` alike.
//! - [`audit`]: the audit actions and the builder of each kind of entry.
//! - [`deadline`]: expired client deadlines answered `DEADLINE_EXCEEDED`.
//! - [`refusals`]: refusals made before any handler (undecodable or
//!   oversized requests) recorded in the audit log.
//! - [`quota`]: per-agency publish rate (a token bucket per agency) and
//!   open `PublishStream` calls per agency, against their cap.
//! - [`policy`]: who may see what of a notification.
//! - [`routing`]: durable subscriptions: filters, open requests, and the
//!   session (window, acks, redelivery, cursor).
//! - [`cases`]: the case picture: the lifecycle state machine and the
//!   values the publishing transaction passes on (change, refusal, record).
//! - [`store`]: SQLite/PostgreSQL persistence and migrations.
//! - [`reports`]: statistics reports and supervision signals, counted as
//!   a viewer may see the store; the periodic `STATISTICS_REPORT`.
//! - [`oversight_api`]: the `liandong.v1.Supervision` service handlers.
//! - [`supervision`]: the mechanism's deadlines (rules, calendar, the
//!   clocks publishes start and stop) and the signed alerts the gateway
//!   emits when one passes.
//! - [`error`]: the one mapping from errors to gRPC statuses.
//! - [`signatures`]: which notifications must be signed and by which
//!   registered key; the registry's keys checked at start and reload.
//! - [`operations_api`]: the `liandong.v1.Operations` service handlers,
//!   for operator certificates only.
//! - [`ops`]: the ops HTTP port (status page, metrics, health) and the
//!   snapshots operators read.
//! - [`telemetry`]: logs (pretty or JSON lines) and OTLP trace export;
//!   one `request` span per gRPC call.
//!
//! [`prepare`] loads everything a gateway needs and fails before binding
//! anything if any of it is wrong; [`serve`] runs it on a bound listener
//! until a shutdown future completes.

pub mod admin;
pub mod announcements;
pub mod api;
pub mod audit;
pub mod cases;
pub mod config;
pub mod deadline;
pub mod disclosure;
pub mod error;
pub mod identity;
pub mod operations_api;
pub mod ops;
pub mod oversight_api;
pub mod policy;
pub mod quota;
pub mod refusals;
pub mod reports;
pub mod routing;
pub mod signatures;
pub mod store;
pub mod supervision;
pub mod telemetry;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use arc_swap::ArcSwap;

use liandong_core::pb::exchange_server::ExchangeServer;
use liandong_core::pb::operations_server::OperationsServer;
use liandong_core::pb::supervision_server::SupervisionServer;
use liandong_core::registry::{Registry, RegistryError};

use crate::config::GatewayConfig;
use crate::identity::TlsSetupError;
use crate::policy::{Policy, PolicyError, Rules};
use crate::routing::{DeliverySettings, LeaseKeeper, Sessions};
use crate::store::agency_state::DisabledAgency;
use crate::store::{Store, StoreError};
use crate::supervision::{GatewayKey, KeyError, Mechanism, MechanismError};

/// The shared state of a running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// Durable storage.
    pub store: Store,
    /// Registry and policy in force; replaced whole on reload.
    pub rules: ArcSwap<Rules>,
    /// Bumped each time new rules are put in force, so that open
    /// subscription streams re-check their agency at once.
    pub rules_version: watch::Sender<u64>,
    /// Live subscription sessions, with what each wants.
    pub sessions: Sessions,
    /// The subscription leases this process holds: one session of a
    /// subscription at a time across every replica.
    pub leases: LeaseKeeper,
    /// Cancelled when the gateway shuts down.
    pub stop: CancellationToken,
    /// Subscription timing and per-agency caps.
    pub delivery: DeliverySettings,
    /// Open `PublishStream` calls per agency, held against
    /// `limits.max_streams_per_agency`.
    pub publish_streams: quota::OpenStreams,
    /// Each agency's publish rate (`limits.publish_per_second`, burst),
    /// shared by all its connections.
    pub publish_rate: quota::rate::PublishRate,
    /// Deadline rules, calendar and time zone in force; replaced whole on
    /// reload.
    pub mechanism: ArcSwap<Mechanism>,
    /// Wakes the deadline timer when a publish starts a clock.
    pub deadline_timer: Arc<tokio::sync::Notify>,
    /// The gateway's own signing key, for the notifications it emits.
    pub key: Arc<GatewayKey>,
    /// `[signing] require_signatures`: every notification must be signed
    /// by a key registered for its sender (off: only agencies with a key).
    pub require_signatures: bool,
    /// The TLS configuration in force (replaced whole on reload) and the
    /// live connections accepted under it.
    pub tls: identity::TlsState,
    /// When this process started serving (wall clock, for display).
    pub started_at: time::OffsetDateTime,
    /// … and on the monotonic clock, for uptime.
    pub started: std::time::Instant,
    /// Agencies an operator disabled, by id: their connections, requests,
    /// publishes and streams are refused while they are listed. Loaded
    /// from the store at start (so it survives a restart), replaced whole
    /// on each change.
    pub agency_states: ArcSwap<BTreeMap<String, DisabledAgency>>,
}

impl Gateway {
    /// A gateway over `store` with `rules` in force, signing what it emits
    /// with `key`; `latest` is the highest sequence already stored.
    pub fn new(
        store: Store,
        rules: Rules,
        latest: u64,
        delivery: DeliverySettings,
        key: Arc<GatewayKey>,
    ) -> Self {
        let publish_rate = quota::rate::PublishRate::new(&delivery.publish_rate);
        let stop = CancellationToken::new();
        let leases = LeaseKeeper::new(
            store.clone(),
            routing::lease::instance_id(),
            delivery.subscription_lease,
            stop.clone(),
        );
        Self {
            store,
            rules: ArcSwap::from_pointee(rules),
            rules_version: watch::Sender::new(0),
            sessions: Sessions::new(latest),
            leases,
            stop,
            delivery,
            publish_streams: quota::OpenStreams::default(),
            publish_rate,
            mechanism: ArcSwap::from_pointee(Mechanism::built_in()),
            deadline_timer: Arc::new(tokio::sync::Notify::new()),
            key,
            require_signatures: false,
            tls: identity::TlsState::default(),
            started_at: time::OffsetDateTime::now_utc(),
            started: std::time::Instant::now(),
            agency_states: ArcSwap::from_pointee(BTreeMap::new()),
        }
    }

    /// The operator's disable of agency `id`, while it is disabled.
    pub fn agency_state(&self, id: &str) -> Option<DisabledAgency> {
        self.agency_states.load().get(id).cloned()
    }

    /// Every disabled agency, by id.
    pub fn disabled_agencies(&self) -> Vec<DisabledAgency> {
        self.agency_states.load().values().cloned().collect()
    }

    /// Puts `agency`'s state in force (`Some`: disabled, `None`: enabled):
    /// every request, publish and connection decided from now on sees it,
    /// and every open session is woken to re-check its agency.
    pub fn put_agency_state_in_force(&self, agency: &str, state: Option<DisabledAgency>) {
        self.agency_states.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            match &state {
                Some(disabled) => next.insert(agency.to_owned(), disabled.clone()),
                None => next.remove(agency),
            };
            next
        });
        self.rules_version.send_modify(|version| *version += 1);
        self.sessions.wake_all();
    }

    /// What a publish needs to start and stop deadlines under the rules in
    /// force now.
    pub fn supervision_context(&self) -> supervision::Context {
        supervision::Context {
            rules: self.rules(),
            mechanism: self.mechanism.load_full(),
            timer: self.deadline_timer.clone(),
            deadline_started: Arc::default(),
            key: self.key.clone(),
        }
    }

    /// The registry and policy in force now.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.load_full()
    }

    /// Loads the registry (checking the keys it publishes), policy,
    /// deadline rules and calendar and the TLS files again and, when all
    /// are valid, puts them in force together;
    /// otherwise keeps the whole previous configuration and says why in
    /// one log line. Either way the reload is audited. After a reload the
    /// live connections are verified again under the new TLS material and
    /// those that no longer pass are closed. `trigger` says what asked for
    /// it (`SIGHUP`, `file change`).
    pub async fn reload_all(
        &self,
        config: &GatewayConfig,
        trigger: &str,
    ) -> Result<(), StartError> {
        const WHAT: &str = "registry, policy, mechanism, TLS";
        let now = time::OffsetDateTime::now_utc();
        let loaded = load_rules(config).and_then(|rules| {
            // The registry must publish the gateway's own key or none.
            signatures::check_registry(
                &rules.registry,
                &config.registry,
                &self.key,
                self.require_signatures,
            )?;
            let mechanism = Mechanism::load(&config.mechanism)?;
            let tls = identity::tls::load(&config.tls, now)?;
            Ok((rules, mechanism, tls))
        });
        let (rules, mechanism, tls) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::error!(%error, trigger, "reload refused; the previous registry, policy, deadline rules and TLS configuration stay in force");
                self.audit_reload(WHAT, false, &error.to_string()).await;
                return Err(error);
            }
        };
        mechanism.warn_provisional();
        self.put_in_force(rules);
        self.mechanism.store(Arc::new(mechanism));
        // Pending due times may now be computable.
        self.deadline_timer.notify_one();
        let material = self.tls.put_in_force(tls);
        tracing::info!(
            trigger,
            "registry and policy reloaded, with the deadline rules and calendar and the TLS configuration"
        );
        material.warn_expiring(config.expiry_warning_days, now);
        self.audit_reload(WHAT, true, &format!("applied on {trigger}"))
            .await;
        identity::recheck(self).await;
        Ok(())
    }

    async fn audit_reload(&self, what: &str, applied: bool, reason: &str) {
        ops::metrics::reloaded(applied);
        if let Err(error) = self
            .store
            .append_audit(&[audit::reload(what, applied, reason)])
            .await
        {
            tracing::error!(%error, "cannot audit a reload");
        }
    }

    /// Puts `rules` in force: every frame sent from now on is decided by
    /// them, and every open session is woken to re-check its agency.
    pub fn put_in_force(&self, rules: Rules) {
        self.rules.store(Arc::new(rules));
        self.rules_version.send_modify(|version| *version += 1);
        self.sessions.wake_all();
    }
}

/// Loads the registry and policy files `config` names, validated.
pub fn load_rules(config: &GatewayConfig) -> Result<Rules, StartError> {
    let registry = Registry::load(&config.registry)?;
    let policy = match &config.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default_policy(),
    };
    Ok(Rules { registry, policy })
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The registry file is unusable.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The policy file is unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The deadline rules, calendar or time zone are unusable.
    #[error(transparent)]
    Mechanism(#[from] MechanismError),
    /// The gateway's signing key is unusable.
    #[error(transparent)]
    SigningKey(#[from] KeyError),
    /// The database cannot be reached or migrated.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The start-up integrity check found stored notifications changed,
    /// missing or out of order.
    #[error("store integrity check failed: {0}")]
    Integrity(String),
    /// The store must not be served as it is, whatever the options: a
    /// copy into it never finished, or it is older than the audit
    /// checkpoint file (restored from a backup) and no fence says the
    /// operator dealt with that.
    #[error("{0}")]
    NotServable(String),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Server(String),
}

impl StartError {
    /// True when the operator's configuration is at fault (exit 64).
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            Self::Registry(_)
                | Self::Policy(_)
                | Self::Tls(_)
                | Self::Mechanism(_)
                | Self::SigningKey(_)
                | Self::Store(StoreError::Config(_) | StoreError::UnsupportedUrl)
        )
    }
}

/// Everything loaded and checked, ready to serve.
#[derive(Debug)]
pub struct Prepared {
    gateway: Arc<Gateway>,
    config: GatewayConfig,
    ops_listener: Option<TcpListener>,
}

impl Prepared {
    /// The shared state (for tests and tools).
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The configuration it was prepared from.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Serves the ops HTTP routes (status page, metrics, health) on
    /// `listener` too.
    pub fn with_ops_listener(mut self, listener: TcpListener) -> Self {
        self.ops_listener = Some(listener);
        self
    }
}

/// How a gateway starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Serve even when the start-up integrity check finds a problem (the
    /// problem is logged at error level; affected rows are still never
    /// served).
    pub allow_integrity_failures: bool,
}

/// Loads the registry and TLS files, connects (and migrates) the store and
/// checks the newest notifications' integrity; refuses to start on a
/// problem.
pub async fn prepare(config: GatewayConfig) -> Result<Prepared, StartError> {
    prepare_with(config, StartOptions::default()).await
}

/// [`prepare`] with start options.
pub async fn prepare_with(
    config: GatewayConfig,
    options: StartOptions,
) -> Result<Prepared, StartError> {
    let rules = load_rules(&config)?;
    let mechanism = Mechanism::load(&config.mechanism)?;
    let key = Arc::new(GatewayKey::load(&config.signing_key)?);
    signatures::check_registry(
        &rules.registry,
        &config.registry,
        &key,
        config.require_signatures,
    )?;
    let tls = identity::tls::load(&config.tls, time::OffsetDateTime::now_utc())?;
    let store = Store::connect(&config.database_url, config.max_connections).await?;
    if let Some(refusal) = store.unfinished_copy_refusal().await? {
        store.close().await;
        return Err(StartError::NotServable(refusal));
    }
    if config.startup_check_rows > 0 {
        let report = store.verify_tail(config.startup_check_rows).await?;
        if !report.is_clean() {
            if !options.allow_integrity_failures {
                store.close().await;
                return Err(StartError::Integrity(report.summary()));
            }
            tracing::error!(
                report = %report.summary(),
                "STARTING DESPITE STORE INTEGRITY FAILURES (--allow-integrity-failures): \
                 affected rows are withheld from every reader; run verify-store"
            );
        } else {
            tracing::info!(
                rows = report.rows_scanned,
                "start-up integrity check passed"
            );
        }
    }
    if config.audit.startup_check_rows > 0 {
        let report = store
            .verify_audit_tail(config.audit.startup_check_rows, Some(key.public_key()))
            .await?;
        if !report.is_clean() {
            if !options.allow_integrity_failures {
                store.close().await;
                return Err(StartError::Integrity(format!(
                    "{}; run `liandong-gateway audit verify`",
                    report.summary()
                )));
            }
            tracing::error!(
                report = %report.summary(),
                "STARTING DESPITE AUDIT LOG INTEGRITY FAILURES (--allow-integrity-failures): run audit verify"
            );
        } else {
            tracing::info!(
                rows = report.rows_checked,
                "start-up audit chain check passed"
            );
        }
    }
    // Checked after the chain itself: a store older than the checkpoint
    // this host wrote was restored (or cut short), and serving it would
    // hand out sequences agencies already hold.
    if let Some(refusal) =
        audit::checkpoints::restore_check(&store, &key.public_key(), &config.audit.checkpoint_file)
            .await?
    {
        store.close().await;
        return Err(StartError::NotServable(refusal));
    }
    if store.backend() == store::Backend::Sqlite {
        // One process serves a SQLite database: leases left in it are a
        // previous process's, which ended (on PostgreSQL they expire).
        let cleared = store.clear_leases().await?;
        if cleared > 0 {
            tracing::info!(
                leases = cleared,
                "subscription leases of the previous gateway process cleared"
            );
        }
    }
    let latest = store.latest_sequence().await?;
    let disabled = store.disabled_agencies().await?;
    mechanism.warn_provisional();
    let mut gateway = Gateway::new(
        store,
        rules,
        latest,
        DeliverySettings::from_config(&config),
        key,
    );
    gateway.require_signatures = config.require_signatures;
    gateway.mechanism.store(Arc::new(mechanism));
    gateway.agency_states.store(Arc::new(
        disabled
            .into_iter()
            .map(|state| (state.agency.clone(), state))
            .collect(),
    ));
    let tls = gateway.tls.put_in_force(tls);
    tls.warn_expiring(config.expiry_warning_days, time::OffsetDateTime::now_utc());
    Ok(Prepared {
        gateway: Arc::new(gateway),
        config,
        ops_listener: None,
    })
}

/// Serves on `listener` until `shutdown` completes, then stops accepting,
/// ends subscription streams, lets in-flight publishes finish within the
/// grace period, and closes the store.
pub async fn serve(
    prepared: Prepared,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let Prepared {
        gateway,
        config,
        ops_listener,
    } = prepared;
    let stop = gateway.stop.clone();
    // The ops port stops with the gateway; it never holds a shutdown up.
    if let Some(listener) = ops_listener {
        tokio::spawn(ops::http::serve(
            listener,
            ops::http::OpsState {
                gateway: gateway.clone(),
                settings: config.ops.clone(),
            },
            stop.clone(),
        ));
    }
    let deadline_timer = supervision::timer::spawn(
        gateway.clone(),
        reports::ReportSettings::from_config(&config),
        Arc::new(supervision::SystemClock),
    );
    let audit_checkpoints = audit::checkpoints::spawn(gateway.clone(), config.audit.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ExchangeServer<api::ExchangeService>>()
        .await;
    health
        .set_serving::<SupervisionServer<oversight_api::SupervisionService>>()
        .await;
    health
        .set_serving::<OperationsServer<operations_api::OperationsService>>()
        .await;
    let health_stop = CancellationToken::new();
    let health_task = tokio::spawn(follow_store_health(
        gateway.store.clone(),
        health.clone(),
        health_stop.clone(),
    ));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(liandong_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| StartError::Server(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| StartError::Server(e.to_string()))?;
    // The strict codec answers over-limit messages with RESOURCE_EXHAUSTED.
    // tonic's own check sits at four times the limit: it refuses from the
    // length prefix, before buffering, and bounds memory per request (its
    // status is OUT_OF_RANGE).
    liandong_proto::codec::set_max_message_bytes(config.max_message_bytes);
    let service = api::ExchangeService::new(gateway.clone());
    let publishes = service.publishes();
    // Every Exchange request has its caller resolved once, then its RPC
    // noted and any refusal made before the handler audited.
    let exchange = identity::ResolveCaller::new(
        telemetry::request_span::RequestSpan::new(refusals::RefusalAudit::new(
            ExchangeServer::new(service)
                .max_decoding_message_size(config.max_message_bytes.saturating_mul(4)),
            gateway.clone(),
        )),
        gateway.clone(),
    );

    // The Supervision service resolves its caller and audits refusals
    // made before its handlers the same way.
    let supervision = identity::ResolveCaller::new(
        telemetry::request_span::RequestSpan::new(refusals::RefusalAudit::new(
            SupervisionServer::new(oversight_api::SupervisionService::new(
                gateway.clone(),
                reports::ReportSettings::from_config(&config),
            ))
            .max_decoding_message_size(config.max_message_bytes.saturating_mul(4)),
            gateway.clone(),
        )),
        gateway.clone(),
    );

    // The Operations service: operator certificates only, resolved and
    // audited the same way.
    let operations = identity::ResolveCaller::new(
        telemetry::request_span::RequestSpan::new(refusals::RefusalAudit::new(
            OperationsServer::new(operations_api::OperationsService::new(
                gateway.clone(),
                reports::ReportSettings::from_config(&config),
            ))
            .max_decoding_message_size(config.max_message_bytes.saturating_mul(4)),
            gateway.clone(),
        )),
        gateway.clone(),
    );

    let incoming = identity::incoming(
        listener,
        gateway.clone(),
        identity::AcceptSettings {
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            max_connections_per_identity: config.max_connections_per_agency,
        },
        stop.clone(),
    );
    // Live connections are verified again every 30 s (a certificate or
    // CRL may expire while connected); expiry warnings repeat daily.
    tokio::spawn(identity::live::recheck_periodically(gateway.clone()));
    // Agencies disabled or enabled through another replica.
    tokio::spawn(operations_api::control::follow_agency_states(
        gateway.clone(),
    ));
    tokio::spawn(warn_expiring_daily(
        gateway.clone(),
        config.expiry_warning_days,
    ));
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(config.max_concurrent_streams_per_connection))
        .layer(deadline::DeadlineLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(exchange)
        .add_service(supervision)
        .add_service(operations);
    let mut server =
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()));

    tokio::select! {
        () = shutdown => {}
        result = &mut server => {
            health_stop.cancel();
            publishes.close();
            publishes.wait().await;
            gateway.stop.cancel();
            let _ = deadline_timer.await;
            let _ = audit_checkpoints.await;
            final_checkpoint(&gateway, &config).await;
            gateway.store.close().await;
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(StartError::Server(liandong_core::tls::error_chain(&e))),
                Err(e) => Err(StartError::Server(e.to_string())),
            };
        }
    }
    tracing::info!(
        grace_ms = config.shutdown_grace.as_millis() as u64,
        "shutting down: no new connections, finishing in-flight work"
    );
    health_stop.cancel();
    let _ = health_task.await;
    health
        .set_not_serving::<ExchangeServer<api::ExchangeService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    stop.cancel();
    let grace_ends = tokio::time::Instant::now() + config.shutdown_grace;
    let result = match tokio::time::timeout_at(grace_ends, &mut server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(StartError::Server(liandong_core::tls::error_chain(&e))),
        Ok(Err(e)) => Err(StartError::Server(e.to_string())),
        Err(_) => {
            tracing::warn!("grace period over; closing the remaining connections");
            server.abort();
            Ok(())
        }
    };
    // Publishes whose caller went away still run: let them finish within
    // the grace period, so none is cut off by the store closing.
    publishes.close();
    if tokio::time::timeout_at(grace_ends, publishes.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = publishes.len(),
            "grace period over with publishes still running; each completes or leaves nothing"
        );
    }
    // Cancelled with `stop` above; a round in progress completes or leaves
    // nothing.
    let _ = deadline_timer.await;
    let _ = audit_checkpoints.await;
    final_checkpoint(&gateway, &config).await;
    gateway.store.close().await;
    tracing::info!("stopped");
    result
}

/// Signs the audit chain head once every write is done, so the
/// checkpoint file covers everything this process appended.
async fn final_checkpoint(gateway: &Gateway, config: &GatewayConfig) {
    if let Err(error) =
        audit::checkpoints::checkpoint_now(gateway, &config.audit.checkpoint_file).await
    {
        tracing::error!(%error, "no audit checkpoint at shutdown");
    }
}

/// Warns once a day about TLS certificates and CRLs expiring within
/// `days` (start and reloads warn on their own).
async fn warn_expiring_daily(gateway: Arc<Gateway>, days: u32) {
    const DAY: Duration = Duration::from_secs(24 * 60 * 60);
    loop {
        tokio::select! {
            () = tokio::time::sleep(DAY) => {}
            () = gateway.stop.cancelled() => return,
        }
        if let Some(material) = gateway.tls.current() {
            material.warn_expiring(days, time::OffsetDateTime::now_utc());
        }
    }
}

/// How often an unhealthy store is probed with a small write.
const STORE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps the health service in step with the store: `NOT_SERVING` (overall
/// and `liandong.v1.Exchange`) while writes fail, probing with a real write
/// every second, and `SERVING` again as soon as one succeeds.
async fn follow_store_health(
    store: Store,
    reporter: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let mut healthy = store.health();
    let mut serving = true;
    // Health may flip often on a nearly full disk: each direction is
    // logged once per interval, with how often it happened.
    let log = store::LogThrottle::default();
    loop {
        let now = *healthy.borrow_and_update();
        if now != serving {
            serving = now;
            let status = if now {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            if now {
                reporter
                    .set_serving::<ExchangeServer<api::ExchangeService>>()
                    .await;
                if let Some(count) = log.occurrence("serving") {
                    tracing::warn!(
                        occurrences = count,
                        "store writes work again: health SERVING"
                    );
                }
            } else {
                reporter
                    .set_not_serving::<ExchangeServer<api::ExchangeService>>()
                    .await;
                if let Some(count) = log.occurrence("not serving") {
                    tracing::error!(
                        occurrences = count,
                        "store writes fail: health NOT_SERVING until a write succeeds"
                    );
                }
            }
        }
        if now {
            tokio::select! {
                changed = healthy.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
        } else {
            tokio::select! {
                () = tokio::time::sleep(STORE_PROBE_INTERVAL) => {
                    // A failure is logged (throttled) by the store.
                    let _ = store.probe().await;
                }
                () = stop.cancelled() => return,
            }
        }
    }
}
