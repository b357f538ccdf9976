//! Prometheus metrics: the one place their names, labels and help texts
//! live.
//!
//! The rest of the gateway records what happens through the small
//! functions here ([`published`], [`answered`], [`delivered`], [`acked`],
//! [`handshake_error`] and its kin, [`reloaded`], [`store_write`]), one
//! line at the
//! place where it happens. Values that describe the gateway now (lag,
//! connections, breaches, audit and certificate ages, store health) are
//! read when Prometheus scrapes ([`scrape`]), never kept up to date in the
//! background.
//!
//! Label values are bounded and never case content: registered agency ids
//! (anything else is `unregistered`), event type names, RPC names from a
//! fixed list, status code names, fixed reason words, the store's own
//! operation names, subscription names (capped per agency by
//! `limits.max_subscriptions_per_agency`) and the TLS files' subjects.
//!
//! The recorder is installed once per process, the first time any of
//! these functions runs (or `/metrics` is scraped), so nothing recorded
//! before the first scrape is lost. A process whose global recorder is
//! already taken by another library logs a warning; `/metrics` then shows
//! nothing recorded here.

mod refresh;

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use liandong_core::domain::{AgencyId, Event};

use super::http::OpsState;
use crate::identity::Caller;

/// Notifications stored, by sender and event.
pub const PUBLISHES: &str = "liandong_publishes_total";
/// Requests answered with an error status, by agency, RPC and reason.
pub const REFUSALS: &str = "liandong_refusals_total";
/// Frames sent for the first time, by subscribing agency.
pub const DELIVERIES: &str = "liandong_deliveries_total";
/// Frames sent again after their ack timeout, by subscribing agency.
pub const REDELIVERIES: &str = "liandong_redeliveries_total";
/// Deliveries acknowledged, by subscribing agency.
pub const ACKS: &str = "liandong_acks_total";
/// TLS handshakes that failed, by reason.
pub const HANDSHAKE_FAILURES: &str = "liandong_tls_handshake_failures_total";
/// Reloads of registry, policy, deadline rules and TLS, by outcome.
pub const RELOADS: &str = "liandong_reloads_total";
/// Store write transactions, from asking for the write lock to `COMMIT`.
pub const STORE_COMMIT: &str = "liandong_store_commit_seconds";
/// Writes carried by each committed store transaction (group commit).
pub const STORE_BATCH: &str = "liandong_store_writes_per_commit";
/// Notifications after a subscription's acknowledged position.
pub const SUBSCRIPTION_LAG: &str = "liandong_subscription_lag_messages";
/// Age of the oldest of them.
pub const SUBSCRIPTION_LAG_SECONDS: &str = "liandong_subscription_lag_seconds";
/// Live TLS connections per agency.
pub const AGENCY_CONNECTIONS: &str = "liandong_agency_connections";
/// Open subscription streams per agency.
pub const AGENCY_STREAMS: &str = "liandong_agency_streams";
/// Live TLS connections, all identities.
pub const CONNECTIONS: &str = "liandong_connections";
/// Open subscription streams, all agencies.
pub const STREAMS: &str = "liandong_streams";
/// Deadline breaches open (BREACH signals).
pub const BREACHES_OPEN: &str = "liandong_breaches_open";
/// Seconds since the last audit row was appended.
pub const AUDIT_HEAD_AGE: &str = "liandong_audit_head_age_seconds";
/// Seconds since the last signed audit checkpoint.
pub const AUDIT_CHECKPOINT_AGE: &str = "liandong_audit_checkpoint_age_seconds";
/// Audit rows no checkpoint covers yet.
pub const AUDIT_ROWS_SINCE_CHECKPOINT: &str = "liandong_audit_rows_since_checkpoint";
/// Seconds until a certificate or CRL in force expires (negative: expired).
pub const TLS_EXPIRY: &str = "liandong_tls_expiry_seconds";
/// 1 while the store answers reads and its last write succeeded.
pub const STORE_UP: &str = "liandong_store_up";
/// The highest sequence stored.
pub const HIGH_WATER: &str = "liandong_high_water_sequence";
/// Notifications stored.
pub const NOTIFICATIONS: &str = "liandong_notifications";
/// Always 1, labelled with the version and store backend.
pub const BUILD_INFO: &str = "liandong_build_info";
/// When this process started, seconds since the Unix epoch.
pub const START_TIME: &str = "liandong_start_time_seconds";
/// Seconds the last scrape-time refresh took.
pub const SCRAPE_SECONDS: &str = "liandong_scrape_refresh_seconds";
/// Scrape-time values that could not be read, by part.
pub const SCRAPE_ERRORS: &str = "liandong_scrape_errors_total";

/// Buckets of [`STORE_COMMIT`]: a SQLite commit with a full sync takes a
/// few milliseconds; a lock wait runs to the lock timeout (10 s).
const COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of writes per committed transaction, up to the writer's
/// largest transaction.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// How long a series that is set at scrape time (a subscription's lag, an
/// agency's connections) outlives its last refresh: a subscription gone
/// from the store leaves `/metrics` after this.
const GAUGE_IDLE: Duration = Duration::from_secs(15 * 60);

/// The label value of a caller that is not a registered agency.
pub const UNREGISTERED: &str = "unregistered";

/// The recorder's handle, installing the recorder on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install)
}

fn install() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .set_buckets_for_metric(Matcher::Full(STORE_COMMIT.into()), COMMIT_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(Matcher::Full(STORE_BATCH.into()), BATCH_BUCKETS)
        })
        .unwrap_or_else(|_| PrometheusBuilder::new());
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!(
            "a metrics recorder was already installed; /metrics shows only what it records"
        );
    }
    describe();
    // Series with a fixed set of label values start at zero, so that the
    // first event is an increase Prometheus can see.
    for outcome in ["applied", "refused"] {
        counter!(RELOADS, "outcome" => outcome).increment(0);
    }
    for reason in HandshakeFailure::ALL {
        counter!(HANDSHAKE_FAILURES, "reason" => reason.as_str()).increment(0);
    }
    handle
}

/// The help text of every metric.
fn describe() {
    describe_counter!(
        PUBLISHES,
        "Notifications agencies published that were stored, by sender agency and event type."
    );
    describe_counter!(
        REFUSALS,
        "Requests answered with an error status, by agency, RPC and reason (the gRPC status code)."
    );
    describe_counter!(
        DELIVERIES,
        "Deliveries sent for the first time, by subscribing agency."
    );
    describe_counter!(
        REDELIVERIES,
        "Deliveries sent again after their ack timeout, by subscribing agency."
    );
    describe_counter!(ACKS, "Deliveries acknowledged, by subscribing agency.");
    describe_counter!(HANDSHAKE_FAILURES, "TLS handshakes that failed, by reason.");
    describe_counter!(
        RELOADS,
        "Reloads of registry, policy, deadline rules and TLS files, by outcome (applied or refused)."
    );
    describe_histogram!(
        STORE_COMMIT,
        Unit::Seconds,
        "Store write transactions from asking for the write lock to COMMIT, by operation."
    );
    describe_histogram!(
        STORE_BATCH,
        "Writes carried by each committed store transaction: above 1 when writes arriving together share one commit."
    );
    describe_gauge!(
        SUBSCRIPTION_LAG,
        "Notifications after the subscription's acknowledged position that it may receive."
    );
    describe_gauge!(
        SUBSCRIPTION_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest notification the subscription has not acknowledged."
    );
    describe_gauge!(AGENCY_CONNECTIONS, "Live TLS connections of the agency.");
    describe_gauge!(AGENCY_STREAMS, "Open subscription streams of the agency.");
    describe_gauge!(CONNECTIONS, "Live TLS connections.");
    describe_gauge!(STREAMS, "Open subscription streams.");
    describe_gauge!(
        BREACHES_OPEN,
        "Supervision deadlines passed without their answer."
    );
    describe_gauge!(
        AUDIT_HEAD_AGE,
        Unit::Seconds,
        "Seconds since the last audit row."
    );
    describe_gauge!(
        AUDIT_CHECKPOINT_AGE,
        Unit::Seconds,
        "Seconds since the last signed audit checkpoint (absent when there is none)."
    );
    describe_gauge!(
        AUDIT_ROWS_SINCE_CHECKPOINT,
        "Audit rows no signed checkpoint covers yet."
    );
    describe_gauge!(
        TLS_EXPIRY,
        Unit::Seconds,
        "Seconds until the certificate or CRL expires (negative once expired)."
    );
    describe_gauge!(
        STORE_UP,
        "1 while the store answers reads and its last write succeeded."
    );
    describe_gauge!(HIGH_WATER, "The highest sequence stored.");
    describe_gauge!(NOTIFICATIONS, "Notifications stored.");
    describe_gauge!(
        BUILD_INFO,
        "Always 1: the gateway's version and store backend."
    );
    describe_gauge!(
        START_TIME,
        Unit::Seconds,
        "When this process started (Unix time)."
    );
    describe_counter!(
        SCRAPE_ERRORS,
        "Scrape-time values that could not be read in time, by part (status, agencies, subscriptions, audit)."
    );
    describe_gauge!(
        SCRAPE_SECONDS,
        Unit::Seconds,
        "How long reading the scrape-time values took."
    );
}

/// A notification of `sender` with `event` was stored.
pub fn published(sender: &AgencyId, event: Event) {
    handle();
    counter!(PUBLISHES, "agency" => sender.to_string(), "event" => event.name()).increment(1);
}

/// A request of `caller` to `rpc` (a [`rpc_label`]) ended with `code`:
/// counted as a refusal unless it is `OK`.
pub fn answered(caller: &Caller, rpc: &'static str, code: tonic::Code) {
    if code == tonic::Code::Ok {
        return;
    }
    handle();
    let agency = match caller {
        Caller::Agency(principal) => principal.agency.id.to_string(),
        Caller::Refused { .. } => UNREGISTERED.to_owned(),
    };
    counter!(
        REFUSALS,
        "agency" => agency,
        "rpc" => rpc,
        "reason" => code_label(code),
    )
    .increment(1);
}

/// A frame was sent to a subscription of `agency`; `attempt` 1 is its
/// first delivery, later ones redeliveries.
pub fn delivered(agency: &AgencyId, attempt: u32) {
    handle();
    let name = if attempt > 1 {
        REDELIVERIES
    } else {
        DELIVERIES
    };
    counter!(name, "agency" => agency.to_string()).increment(1);
}

/// `count` deliveries to a subscription of `agency` were acknowledged.
pub fn acked(agency: &AgencyId, count: usize) {
    handle();
    counter!(ACKS, "agency" => agency.to_string()).increment(count as u64);
}

/// A reload was applied, or refused (the previous configuration stays).
pub fn reloaded(applied: bool) {
    handle();
    let outcome = if applied { "applied" } else { "refused" };
    counter!(RELOADS, "outcome" => outcome).increment(1);
}

/// A store write transaction named `operation` took `elapsed`.
pub fn store_write(operation: &'static str, elapsed: Duration) {
    handle();
    histogram!(STORE_COMMIT, "operation" => operation).record(elapsed.as_secs_f64());
}

/// A store transaction committed carrying `writes` writes.
pub fn store_batch(writes: usize) {
    handle();
    histogram!(STORE_BATCH).record(writes as f64);
}

/// Why a TLS handshake failed: a fixed set of words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client sent no certificate.
    NoCertificate,
    /// Its certificate does not verify (unknown issuer, bad signature,
    /// wrong usage, not yet valid, …).
    BadCertificate,
    /// Its certificate is revoked by a CRL in force.
    Revoked,
    /// Its certificate has expired.
    Expired,
    /// The connection did not start with a TLS record (plain HTTP and the
    /// like).
    Plaintext,
    /// The handshake did not complete within the handshake timeout.
    Timeout,
    /// The peer speaks TLS the gateway does not accept (old versions,
    /// no common cipher suite or ALPN, malformed messages).
    Protocol,
    /// Anything else (the connection failed or closed mid-handshake).
    Other,
}

impl HandshakeFailure {
    /// Every reason.
    pub const ALL: [Self; 8] = [
        Self::NoCertificate,
        Self::BadCertificate,
        Self::Revoked,
        Self::Expired,
        Self::Plaintext,
        Self::Timeout,
        Self::Protocol,
        Self::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::BadCertificate => "bad_certificate",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Plaintext => "plaintext",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::Other => "other",
        }
    }

    /// What the error of a failed `accept` says.
    pub fn of(error: &std::io::Error) -> Self {
        match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => Self::of_tls(tls),
            None => Self::Other,
        }
    }

    /// What a rustls error says.
    pub fn of_tls(error: &rustls::Error) -> Self {
        use rustls::{CertificateError, Error};
        match error {
            Error::NoCertificatesPresented => Self::NoCertificate,
            Error::InvalidCertificate(CertificateError::Revoked) => Self::Revoked,
            Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => Self::Expired,
            Error::InvalidCertificate(_) => Self::BadCertificate,
            Error::InappropriateMessage { .. }
            | Error::InappropriateHandshakeMessage { .. }
            | Error::InvalidMessage(_)
            | Error::PeerIncompatible(_)
            | Error::PeerMisbehaved(_)
            | Error::NoApplicationProtocol
            | Error::PeerSentOversizedRecord
            | Error::DecryptError
            | Error::AlertReceived(_) => Self::Protocol,
            _ => Self::Other,
        }
    }
}

/// A TLS handshake failed for `reason`.
pub fn handshake_failed(reason: HandshakeFailure) {
    handle();
    counter!(HANDSHAKE_FAILURES, "reason" => reason.as_str()).increment(1);
}

/// The TLS acceptor failed with `error`.
pub fn handshake_error(error: &std::io::Error) {
    handshake_failed(HandshakeFailure::of(error));
}

/// A connection to the TLS port did not start with a TLS record.
pub fn handshake_plaintext() {
    handshake_failed(HandshakeFailure::Plaintext);
}

/// A TLS handshake did not complete within the handshake timeout.
pub fn handshake_timeout() {
    handshake_failed(HandshakeFailure::Timeout);
}

/// The gRPC methods the gateway serves behind its caller check; a path
/// naming anything else is labelled `other`, so a client cannot create
/// label values.
const RPCS: &[&str] = &[
    "Exchange.Publish",
    "Exchange.PublishStream",
    "Exchange.Subscribe",
    "Exchange.GetCase",
    "Supervision.ListSignals",
    "Supervision.GetReport",
    "Operations.GetStatus",
    "Operations.ListAgencies",
    "Operations.ListSubscriptions",
    "Operations.DisableAgency",
    "Operations.EnableAgency",
    "Operations.SeekSubscription",
    "Operations.ListBreaches",
    "Operations.VerifyAudit",
    "Operations.GetReport",
];

/// `Service.Method` of a request path `/liandong.v1.Service/Method`, when
/// it is one the gateway serves; `other` otherwise.
pub fn rpc_label(path: &str) -> &'static str {
    path.strip_prefix("/liandong.v1.")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(service, method)| {
            RPCS.iter().copied().find(|known| {
                known
                    .split_once('.')
                    .is_some_and(|(s, m)| s == service && m == method)
            })
        })
        .unwrap_or("other")
}

/// The status code as a label value: its canonical name, in lower case.
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// How long reading the scrape-time values may take before `/metrics`
/// answers with what it has (the store marked down).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /metrics`: the Prometheus text format, after reading the values
/// that describe the gateway now.
pub async fn scrape(State(state): State<OpsState>) -> Response {
    let handle = handle();
    refresh::refresh(&state.gateway, REFRESH_TIMEOUT).await;
    handle.run_upkeep();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
